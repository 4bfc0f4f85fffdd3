"""A small deterministic dataset for tests: 10 classes of fixed smooth patterns plus noise, 1x32x32."""

from __future__ import annotations

import functools
import hashlib

import torch

from bench.data.base import DATASETS, DataBundle, TensorLoader, make_generator

NUM_CLASSES, IMAGE_SIZE = 10, 32
NUM_TRAIN, NUM_TEST = 1024, 256
# Fixed on purpose: the data must never depend on the run seed, so it is the same in every test and cell.
DATA_SEED = 20240601
NOISE_STD = 1.0  # patterns have unit std: SNR 1 per pixel, easy for a CNN yet not a constant image


def _make_split(g: torch.Generator, patterns: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(n) % NUM_CLASSES  # balanced classes
    labels = labels[torch.randperm(n, generator=g)]
    noise = torch.randn(n, 1, IMAGE_SIZE, IMAGE_SIZE, generator=g) * NOISE_STD
    return (patterns[labels] + noise).contiguous(), labels.to(torch.int64)


@functools.lru_cache(maxsize=1)
def load_tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """(train images, train labels, test images, test labels, fingerprint), generated once per process."""
    g = make_generator(DATA_SEED)
    # Smooth patterns (8x8 noise upsampled) so that small convs and small shifts see structure, not pixel noise.
    coarse = torch.randn(NUM_CLASSES, 1, 8, 8, generator=g)
    patterns = torch.nn.functional.interpolate(coarse, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear")
    patterns = (patterns - patterns.mean()) / patterns.std()
    x_train, y_train = _make_split(g, patterns, NUM_TRAIN)
    x_test, y_test = _make_split(g, patterns, NUM_TEST)
    digest = hashlib.sha256()
    for t in (x_train, y_train, x_test, y_test):
        digest.update(t.numpy().tobytes())
    return x_train, y_train, x_test, y_test, digest.hexdigest()


@DATASETS.register("synthetic", label="synthetic", num_classes=NUM_CLASSES)
def build_synthetic(
    *, root: str | None, batch_size: int, eval_batch_size: int, seed: int, augment: bool = True, num_workers: int = 0
) -> DataBundle:
    """The synthetic test dataset; ``root``, ``augment`` and ``num_workers`` are ignored (no files, no augmentation).

    Augmentation is off because flips would turn one class pattern into another; the seed still drives shuffling.
    """
    x_train, y_train, x_test, y_test, fingerprint = load_tensors()
    return DataBundle(
        name="synthetic",
        train=TensorLoader(x_train, y_train, batch_size, shuffle=True, seed=seed),
        test=TensorLoader(x_test, y_test, eval_batch_size, shuffle=False, seed=seed),
        num_classes=NUM_CLASSES,
        in_chans=1,
        image_size=IMAGE_SIZE,
        fingerprint=fingerprint,
        num_train=NUM_TRAIN,
        num_test=NUM_TEST,
        load_train_images=lambda idx: x_train[idx],
    )
