"""Datasets: a registry of factories returning a DataBundle (loaders plus metadata), and ``build_data``."""

from __future__ import annotations

from bench.data import fashion_mnist, imagenet, synthetic  # noqa: F401  (imports register the datasets)
from bench.data.base import DATASETS, DataBundle, DataError, Loader, TensorLoader

__all__ = ["DATASETS", "DataBundle", "DataError", "Loader", "TensorLoader", "build_data"]


def build_data(
    name: str,
    *,
    root: str | None,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    augment: bool = True,
    num_workers: int = 0,
) -> DataBundle:
    """Build the dataset registered as ``name``; an unknown name raises a RegistryError listing the accepted ones.

    ``root`` None means the dataset's default location (Fashion-MNIST: /usr/share/datasets/fashion-mnist).
    """
    factory = DATASETS.get(name)
    for key, value, low in (
        ("batch_size", batch_size, 1),
        ("eval_batch_size", eval_batch_size, 1),
        ("num_workers", num_workers, 0),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise DataError(f"data {key} must be an integer >= {low}, got {value!r}")
    return factory(
        root=root,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        seed=seed,
        augment=augment,
        num_workers=num_workers,
    )
