"""Fashion-MNIST (the embedded default): the four IDX .gz files, padded to 32x32, held in memory."""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass
from functools import partial

import torch

from bench.data.base import DATASETS, DataBundle, DataError, TensorLoader, random_flip_translate

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530
# Zero pixels after normalisation: the value of the 28->32 padding and of pixels uncovered by translation.
BACKGROUND = (0.0 - MEAN) / STD
IMAGE_SIZE, RAW_SIZE, PAD = 32, 28, 2
MAX_SHIFT = 2
NUM_CLASSES = 10

# split -> (images file, labels file, published count)
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801  # IDX: unsigned byte, 3 resp. 1 dimensions


@dataclass(frozen=True)
class FashionMNISTTensors:
    """Decoded, padded and normalised splits (float32 Nx1x32x32 images, int64 labels) and the files' digest."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    fingerprint: str


def _missing_hint(root: str) -> str:
    if os.path.abspath(root) == DEFAULT_ROOT:
        return " (install it with: apt-get install dataset-fashion-mnist)"
    return f" (expected {', '.join(f for names in FILES.values() for f in names[:2])})"


def _parse_idx(path: str, raw: bytes, magic: int, count: int) -> torch.Tensor:
    """Decompress and validate one IDX file; return its payload as a uint8 tensor of shape (count, ...)."""
    try:
        data = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"corrupt Fashion-MNIST file {path}: not a valid gzip stream ({e})") from None
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"corrupt Fashion-MNIST file {path}: {len(data)} bytes, shorter than the IDX header")
    got_magic, *dims = struct.unpack(f">{1 + ndim}I", data[:header])
    if got_magic != magic:
        raise DataError(f"corrupt Fashion-MNIST file {path}: IDX magic {got_magic:#010x}, expected {magic:#010x}")
    expected_dims = [count] + [RAW_SIZE] * (ndim - 1)
    if dims != expected_dims:
        raise DataError(f"corrupt Fashion-MNIST file {path}: IDX dimensions {dims}, expected {expected_dims}")
    size = 1
    for d in dims:
        size *= d
    if len(data) != header + size:
        raise DataError(f"corrupt Fashion-MNIST file {path}: {len(data) - header} data bytes, expected {size}")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=header).view(*dims)


def _to_padded_float(raw: torch.Tensor) -> torch.Tensor:
    """uint8 Nx28x28 -> normalised float32 Nx1x32x32 with a background (zero-pixel) border."""
    out = torch.full((raw.shape[0], 1, IMAGE_SIZE, IMAGE_SIZE), BACKGROUND, dtype=torch.float32)
    for lo in range(0, raw.shape[0], 10000):  # chunks keep the float temporaries small
        chunk = raw[lo : lo + 10000].to(torch.float32).div_(255.0).sub_(MEAN).div_(STD)
        out[lo : lo + 10000, 0, PAD : PAD + RAW_SIZE, PAD : PAD + RAW_SIZE] = chunk
    return out


@functools.lru_cache(maxsize=2)
def load_tensors(root: str) -> FashionMNISTTensors:
    """Read, validate and decode the four files under ``root`` (cached per root within the process)."""
    if not os.path.isdir(root):
        raise DataError(f"Fashion-MNIST directory {root} not found{_missing_hint(root)}")
    digest = hashlib.sha256()
    parsed: dict[str, torch.Tensor] = {}
    for split, (img_name, lbl_name, count) in FILES.items():
        for name, magic in ((img_name, IMAGES_MAGIC), (lbl_name, LABELS_MAGIC)):
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as f:
                    raw = f.read()
            except FileNotFoundError:
                raise DataError(f"Fashion-MNIST file {path} not found{_missing_hint(root)}") from None
            except OSError as e:
                raise DataError(f"cannot read Fashion-MNIST file {path}: {e.strerror}") from None
            digest.update(f"{name}\0{len(raw)}\0".encode())
            digest.update(raw)
            parsed[f"{split}_{'images' if magic == IMAGES_MAGIC else 'labels'}"] = _parse_idx(path, raw, magic, count)
    for split, (_, lbl_name, _) in FILES.items():
        labels = parsed[f"{split}_labels"]
        if int(labels.max()) >= NUM_CLASSES:
            path = os.path.join(root, lbl_name)
            raise DataError(f"corrupt Fashion-MNIST file {path}: label {int(labels.max())} outside 0..9")
    return FashionMNISTTensors(
        train_images=_to_padded_float(parsed["train_images"]),
        train_labels=parsed["train_labels"].to(torch.int64),
        test_images=_to_padded_float(parsed["test_images"]),
        test_labels=parsed["test_labels"].to(torch.int64),
        fingerprint=digest.hexdigest(),
    )


augment_batch = partial(random_flip_translate, max_shift=MAX_SHIFT, pad_value=BACKGROUND)
augment_batch.__doc__ = "Fashion-MNIST training augmentation: random horizontal flip and translation of up to 2 px."


@DATASETS.register("fashion_mnist", label="Fashion-MNIST", num_classes=NUM_CLASSES)
def build_fashion_mnist(
    *, root: str | None, batch_size: int, eval_batch_size: int, seed: int, augment: bool = True, num_workers: int = 0
) -> DataBundle:
    """Fashion-MNIST at 32x32 (60000 train / 10000 test); ``num_workers`` is unused (the data is in memory)."""
    t = load_tensors(os.path.abspath(root or DEFAULT_ROOT))
    train = TensorLoader(
        t.train_images,
        t.train_labels,
        batch_size,
        shuffle=True,
        seed=seed,
        transform=augment_batch if augment else None,
    )
    test = TensorLoader(t.test_images, t.test_labels, eval_batch_size, shuffle=False, seed=seed)
    return DataBundle(
        name="fashion_mnist",
        train=train,
        test=test,
        num_classes=NUM_CLASSES,
        in_chans=1,
        image_size=IMAGE_SIZE,
        fingerprint=t.fingerprint,
        num_train=t.train_images.shape[0],
        num_test=t.test_images.shape[0],
        load_train_images=lambda idx: t.train_images[idx],
    )
