"""ImageNet (or any ImageFolder with train/ and val/): streamed from disk with the MQBench preprocessing."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from bench.data.base import DATASETS, Batch, DataBundle, DataError, derive_seed, make_generator, split_bounds

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
IMAGE_SIZE, RESIZE = 224, 256
LAYOUT = "expected <root>/train/<class>/<image> and <root>/val/<class>/<image>"


def train_transform() -> Callable[[Any], torch.Tensor]:
    """MQBench training preprocessing: RandomResizedCrop(224), flip, ColorJitter(0.2, 0.2, 0.2, 0.1), normalise."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.RandomResizedCrop(IMAGE_SIZE),
            T.RandomHorizontalFlip(),
            T.ColorJitter(0.2, 0.2, 0.2, 0.1),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )


def test_transform() -> Callable[[Any], torch.Tensor]:
    """MQBench evaluation preprocessing: Resize(256), CenterCrop(224), normalise."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(RESIZE), T.CenterCrop(IMAGE_SIZE), T.ToTensor(), T.Normalize(MEAN, STD)])


class StreamingDataset(Dataset):
    """Loads one image from disk per item; holds only (path, label) pairs, never pixels.

    Items are indexed by ``(index, sample_seed)``: the random transform runs under a forked global RNG seeded
    with ``sample_seed``, so an augmentation depends on (seed, epoch, index) only — not on the number of workers —
    and the caller's global RNG is left untouched.
    """

    def __init__(
        self, samples: list[tuple[str, int]], loader: Callable[[str], Any], transform: Callable[[Any], torch.Tensor]
    ) -> None:
        self.samples = samples
        self.loader = loader
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, sample_seed = item
        path, label = self.samples[index]
        image = self.loader(path)
        # torchvision's transforms draw from the global torch RNG; fork it so the draw is seeded and contained.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            return self.transform(image), label


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, sample_seed)``; the order (if shuffled) and the seeds come from (seed, epoch) only."""

    def __init__(self, size: int, *, shuffle: bool, seed: int) -> None:
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next pass produces."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = make_generator(derive_seed("loader", self.seed, self.epoch))
        order = torch.randperm(self.size, generator=g) if self.shuffle else torch.arange(self.size)
        seeds = torch.randint(0, 2**62, (self.size,), generator=g)
        return iter(zip(order.tolist(), seeds.tolist(), strict=True))


class RankBatchSampler(Sampler[list[tuple[int, int]]]):
    """Rank ``rank``'s contiguous slice of every global batch of ``sampler`` (DDP: a rank loads only its images).

    ``drop_last`` drops a last partial global batch (training); otherwise ranks left without a slice of the last
    batch skip it (evaluation sums counts over ranks).
    """

    def __init__(self, sampler: SeededSampler, batch_size: int, rank: int, world_size: int, drop_last: bool) -> None:
        self.sampler, self.batch_size, self.rank, self.world_size = sampler, batch_size, rank, world_size
        self.drop_last = drop_last

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        items = list(self.sampler)
        for b in range(len(self)):
            batch = items[b * self.batch_size:(b + 1) * self.batch_size]
            lo, hi = split_bounds(len(batch), self.rank, self.world_size)
            if hi > lo:
                yield batch[lo:hi]


class StreamLoader:
    """A torch DataLoader over a StreamingDataset with a seeded sampler, satisfying the ``Loader`` protocol."""

    def __init__(
        self, dataset: StreamingDataset, batch_size: int, *, shuffle: bool, seed: int, num_workers: int,
        shard: tuple[int, int, bool] | None = None,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle, self.seed, self.num_workers = shuffle, seed, num_workers
        self.sampler = SeededSampler(len(dataset), shuffle=shuffle, seed=seed)
        batching: dict[str, Any] = {"batch_size": batch_size, "sampler": self.sampler}
        if shard is not None:  # (rank, world_size, drop_last): this rank's slice of every global batch
            batching = {"batch_sampler": RankBatchSampler(self.sampler, batch_size, *shard)}
        self.loader = DataLoader(
            dataset,
            **batching,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,  # only allowed with workers
            pin_memory=torch.cuda.is_available(),
            generator=make_generator(derive_seed("workers", seed)),  # worker base seeds, not the global RNG
        )

    @property
    def num_samples(self) -> int:
        """Images per epoch."""
        return len(self.dataset)

    def shard(self, rank: int, world_size: int, *, drop_last: bool) -> StreamLoader:
        """The same epochs for DDP rank ``rank``: its slice of every global batch (see ``RankBatchSampler``)."""
        return StreamLoader(self.dataset, self.batch_size, shuffle=self.shuffle, seed=self.seed,
                            num_workers=self.num_workers, shard=(rank, world_size, drop_last))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next iteration produces."""
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.loader)


def _image_folder(path: str) -> Any:
    from torchvision.datasets import ImageFolder

    if not os.path.isdir(path):
        raise DataError(f"ImageNet directory {path} not found; {LAYOUT}")
    try:
        # No transform: StreamingDataset applies it; we only use the folder's file index and loader.
        return ImageFolder(path)
    except (FileNotFoundError, OSError) as e:
        raise DataError(f"cannot index ImageNet directory {path}: {str(e).splitlines()[0]}; {LAYOUT}") from None


def fingerprint(root: str) -> str:
    """sha256 over sorted (relative path, size) of every file under root/train and root/val (content not read)."""
    entries: list[tuple[str, int]] = []
    for split in ("train", "val"):
        for dirpath, _, files in os.walk(os.path.join(root, split), followlinks=True):
            for f in files:
                full = os.path.join(dirpath, f)
                entries.append((os.path.relpath(full, root), os.stat(full).st_size))
    digest = hashlib.sha256()
    for rel, size in sorted(entries):
        digest.update(f"{rel}\0{size}\n".encode())
    return digest.hexdigest()


@DATASETS.register("imagenet", label="ImageNet", num_classes=1000)  # an ImageFolder says its own
def build_imagenet(
    *, root: str | None, batch_size: int, eval_batch_size: int, seed: int, augment: bool = True, num_workers: int = 0
) -> DataBundle:
    """ImageNet-style ImageFolder at ``root`` (train/ and val/), streamed through DataLoaders at 224 px."""
    if not root:
        raise DataError(f"the imagenet dataset needs data.root=<dir>; {LAYOUT}")
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise DataError(f"ImageNet root {root} not found; {LAYOUT}")
    train_folder = _image_folder(os.path.join(root, "train"))
    val_folder = _image_folder(os.path.join(root, "val"))
    if train_folder.classes != val_folder.classes:
        raise DataError(
            f"ImageNet at {root}: train/ has {len(train_folder.classes)} classes, val/ has {len(val_folder.classes)}"
            " or different names; the class folders must match"
        )
    eval_tf = test_transform()
    train_set = StreamingDataset(train_folder.samples, train_folder.loader, train_transform() if augment else eval_tf)
    test_set = StreamingDataset(val_folder.samples, val_folder.loader, eval_tf)
    calib_set = StreamingDataset(train_folder.samples, train_folder.loader, eval_tf)

    def load_train_images(idx: torch.Tensor) -> torch.Tensor:
        # The test transform is deterministic, so the sample seed is irrelevant; chunks spread over the workers.
        items = [(int(i), 0) for i in idx]
        loader = DataLoader(calib_set, batch_size=min(len(items), 64), sampler=items, num_workers=num_workers)
        return torch.cat([images for images, _ in loader])

    return DataBundle(
        name="imagenet",
        train=StreamLoader(train_set, batch_size, shuffle=True, seed=seed, num_workers=num_workers),
        test=StreamLoader(test_set, eval_batch_size, shuffle=False, seed=seed, num_workers=num_workers),
        num_classes=len(train_folder.classes),
        in_chans=3,
        image_size=IMAGE_SIZE,
        fingerprint=fingerprint(root),
        num_train=len(train_set),
        num_test=len(test_set),
        load_train_images=load_train_images,
    )
