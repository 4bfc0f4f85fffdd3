"""Shared data types: the DataBundle every dataset returns, the loader protocol and the in-memory loader."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from bench.errors import BenchError
from bench.registry import Registry

Batch = tuple[torch.Tensor, torch.Tensor]
# A batched, in-place-safe augmentation: (images NCHW, generator) -> images NCHW.
BatchTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

# Entries are factories: (root=, batch_size=, eval_batch_size=, seed=, augment=, num_workers=) -> DataBundle.
DATASETS: Registry[Callable[..., DataBundle]] = Registry("dataset")


class DataError(BenchError):
    """Bad or missing dataset input (missing directory, corrupt file, impossible request). One-line message."""


@runtime_checkable
class Loader(Protocol):
    """An iterable of ``(images float32 NCHW, labels int64)`` batches.

    ``len()`` is the number of batches per epoch. The order and augmentation of an epoch depend only on
    ``(seed, epoch)``; call ``set_epoch`` before iterating to get a new epoch (as with DistributedSampler).
    """

    batch_size: int

    def __iter__(self) -> Iterator[Batch]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


def derive_seed(*parts: int | str) -> int:
    """Mix integers/strings into a 63-bit seed (stable across processes, unlike ``hash()``)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def make_generator(seed: int) -> torch.Generator:
    """A local CPU generator seeded with ``seed``; never touches the global RNG."""
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def sample_indices(total: int, n: int, seed: int) -> torch.Tensor:
    """``n`` distinct indices in ``[0, total)``, fixed for a given ``seed``; DataError if impossible."""
    if n < 1:
        raise DataError(f"calibration batch size must be >= 1, got {n}")
    if n > total:
        raise DataError(f"calibration batch of {n} images requested but the training set has only {total}")
    return torch.randperm(total, generator=make_generator(derive_seed("calib", seed)))[:n]


def split_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[lo, hi)`` of rank ``rank``'s contiguous part of ``n`` items (as ``torch.tensor_split``: sizes differ by
    at most one, the first ranks get the larger parts)."""
    q, r = divmod(n, world_size)
    lo = rank * q + min(rank, r)
    return lo, lo + q + (1 if rank < r else 0)


@dataclass
class DataBundle:
    """A dataset ready for the pipeline: loaders plus the metadata the models and the record need."""

    name: str
    train: Loader
    test: Loader
    num_classes: int
    in_chans: int
    image_size: int
    fingerprint: str
    num_train: int
    num_test: int
    # Loads training images at the given indices with the test-time transform (no augmentation).
    load_train_images: Callable[[torch.Tensor], torch.Tensor] = field(repr=False, compare=False, kw_only=True)

    def calibration_batch(self, n: int, seed: int) -> torch.Tensor:
        """``n`` training images (test-time transform, no augmentation) from a seeded sample without replacement."""
        idx = sample_indices(self.num_train, n, seed)
        return self.load_train_images(idx)


class TensorLoader:
    """Batches over tensors held in memory; shuffling and augmentation driven by a generator from (seed, epoch)."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        transform: BatchTransform | None = None,
        drop_last: bool = False,
    ) -> None:
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.transform = transform
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order/augmentation the next iteration produces."""
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        """Images per epoch (before ``drop_last``)."""
        return int(self.images.shape[0])

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        g = make_generator(derive_seed("loader", self.seed, self.epoch))
        n = self.images.shape[0]
        order = torch.randperm(n, generator=g) if self.shuffle else None
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, n)
            if order is None:
                # Copies, so a consumer that edits a batch in place cannot corrupt the cached dataset.
                x, y = self.images[lo:hi].clone(), self.labels[lo:hi].clone()
            else:
                idx = order[lo:hi]
                x, y = self.images[idx], self.labels[idx]
            if self.transform is not None:
                x = self.transform(x, g)
            yield x, y


def random_flip_translate(
    x: torch.Tensor, g: torch.Generator, *, max_shift: int, pad_value: float, flip: bool = True
) -> torch.Tensor:
    """Batched random horizontal flip and integer translation of up to ``max_shift`` px (pad then crop).

    Each image gets its own flip and shift, drawn from ``g``; uncovered pixels take ``pad_value`` (the background).
    """
    n, c, h, w = x.shape
    if flip:
        mask = torch.rand(n, generator=g) < 0.5
        x = torch.where(mask.view(n, 1, 1, 1), x.flip(-1), x)
    if max_shift > 0:
        s = max_shift
        padded = torch.nn.functional.pad(x, (s, s, s, s), value=pad_value)
        off = torch.randint(0, 2 * s + 1, (2, n), generator=g)
        rows = (off[0].view(n, 1) + torch.arange(h)).view(n, 1, h, 1).expand(n, c, h, w + 2 * s)
        x = padded.gather(2, rows)
        cols = (off[1].view(n, 1) + torch.arange(w)).view(n, 1, 1, w).expand(n, c, h, w)
        x = x.gather(3, cols)
    return x
