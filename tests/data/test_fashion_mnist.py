"""Fashion-MNIST: counts, padding/normalisation, deterministic shuffling/augmentation, calibration, errors."""

from __future__ import annotations

import gzip
import itertools
import os
import struct

import pytest
import torch

from bench.data import DataError, build_data
from bench.data import fashion_mnist as fm
from bench.data.base import sample_indices

ROOT = fm.DEFAULT_ROOT
pytestmark = pytest.mark.skipif(
    not os.path.isdir(ROOT), reason=f"{ROOT} absent (apt-get install dataset-fashion-mnist)"
)


def build(seed: int = 0, augment: bool = True, root: str | None = None, batch_size: int = 128):
    return build_data(
        "fashion_mnist", root=root, batch_size=batch_size, eval_batch_size=1000, seed=seed, augment=augment
    )


def first_batches(loader, k: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(itertools.islice(iter(loader), k))


def assert_same(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_counts_shapes_and_metadata():
    b = build()
    assert (b.name, b.num_train, b.num_test) == ("fashion_mnist", 60000, 10000)
    assert (b.num_classes, b.in_chans, b.image_size) == (10, 1, 32)
    assert len(b.train) == 469 and len(b.test) == 10
    x, y = next(iter(b.train))
    assert x.shape == (128, 1, 32, 32) and x.dtype == torch.float32
    assert y.shape == (128,) and y.dtype == torch.int64
    t = fm.load_tensors(ROOT)
    assert torch.bincount(t.train_labels).tolist() == [6000] * 10
    assert torch.bincount(t.test_labels).tolist() == [1000] * 10
    assert len(b.fingerprint) == 64 and int(b.fingerprint, 16) >= 0
    assert build(seed=5).fingerprint == b.fingerprint


def test_padding_and_normalisation():
    t = fm.load_tensors(ROOT)
    bg = (0.0 - 0.2860) / 0.3530
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert torch.all(t.train_images[:, 0][:, border] == bg)
    assert torch.all(t.test_images[:, 0][:, border] == bg)
    inner = t.train_images[:, 0, 2:30, 2:30]
    assert abs(inner.mean().item()) < 0.01 and abs(inner.std().item() - 1.0) < 0.01
    # Pixel values map back to the raw 0..255 grid.
    raw = inner[:100] * 0.3530 + 0.2860
    assert torch.allclose(raw * 255, (raw * 255).round(), atol=1e-3)
    assert raw.min() >= -1e-6 and raw.max() <= 1 + 1e-6
    # The test loader yields the test set in file order, unaugmented.
    x, y = next(iter(build().test))
    assert torch.equal(x, t.test_images[:1000]) and torch.equal(y, t.test_labels[:1000])


def test_shuffle_and_augmentation_deterministic():
    a, b = build(seed=1), build(seed=1)
    for epoch in (0, 3):
        a.train.set_epoch(epoch)
        b.train.set_epoch(epoch)
        assert_same(first_batches(a.train), first_batches(b.train))
    # Iterating the same epoch twice repeats it exactly.
    assert_same(first_batches(a.train), first_batches(a.train))


def test_different_seed_or_epoch_differs():
    a, b = build(seed=1), build(seed=2)
    xa, ya = next(iter(a.train))
    xb, yb = next(iter(b.train))
    assert not torch.equal(ya, yb) and not torch.equal(xa, xb)
    a.train.set_epoch(1)
    x1, y1 = next(iter(a.train))
    assert not torch.equal(ya, y1) and not torch.equal(xa, x1)


def test_global_rng_untouched():
    state = torch.get_rng_state()
    loader = build(seed=3).train
    first_batches(loader, 2)
    assert torch.equal(state, torch.get_rng_state())


def test_augmentation_is_flip_plus_small_shift():
    """Each augmented image is one of the 2 x 5 x 5 flips/shifts of its source, and the batch uses several."""
    plain, aug = build(seed=4, augment=False), build(seed=4, augment=True)
    xp, yp = next(iter(plain.train))
    xa, ya = next(iter(aug.train))
    assert torch.equal(yp, ya)  # the order does not depend on augmentation
    bg = fm.BACKGROUND
    used = set()
    for src, out in zip(xp, xa, strict=True):
        padded = torch.nn.functional.pad(src, (2, 2, 2, 2), value=bg)
        matches = [
            (flip, dy, dx)
            for flip in (False, True)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(
                (padded.flip(-1) if flip else padded)[:, dy : dy + 32, dx : dx + 32],
                out,
            )
        ]
        assert matches, "augmented image is not a flip/shift of its source"
        used.update(matches)
    assert len(used) > 10  # different images get different draws
    assert any(m[0] for m in used) and any(not m[0] for m in used)


def test_calibration_batch_deterministic_unaugmented():
    b = build(seed=0, augment=True)
    c1, c2 = b.calibration_batch(64, seed=7), b.calibration_batch(64, seed=7)
    assert c1.shape == (64, 1, 32, 32) and torch.equal(c1, c2)
    assert not torch.equal(c1, b.calibration_batch(64, seed=8))
    idx = sample_indices(60000, 64, 7)
    assert len(set(idx.tolist())) == 64
    assert torch.equal(c1, fm.load_tensors(ROOT).train_images[idx])
    # Independent of the run seed: calibration depends on its own seed only.
    assert torch.equal(c1, build(seed=99).calibration_batch(64, seed=7))
    with pytest.raises(DataError, match="60001"):
        b.calibration_batch(60001, seed=0)


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_missing_root(tmp_path, monkeypatch):
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as e:
        build(root=str(missing))
    assert str(missing) in one_line(e)
    # For the default root the message says how to install it.
    monkeypatch.setattr(fm, "DEFAULT_ROOT", str(missing))
    with pytest.raises(DataError) as e:
        build(root=None)
    assert "apt-get install dataset-fashion-mnist" in one_line(e)


def link_files(dst, skip: str = "") -> None:
    for names in fm.FILES.values():
        for name in names[:2]:
            if name != skip:
                os.symlink(os.path.join(ROOT, name), dst / name)


def test_missing_file(tmp_path):
    link_files(tmp_path, skip="t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError) as e:
        build(root=str(tmp_path))
    assert str(tmp_path / "t10k-labels-idx1-ubyte.gz") in one_line(e)


def test_truncated_file(tmp_path):
    name = "train-labels-idx1-ubyte.gz"
    link_files(tmp_path, skip=name)
    with open(os.path.join(ROOT, name), "rb") as f:
        data = f.read()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as e:
        build(root=str(tmp_path))
    msg = one_line(e)
    assert str(tmp_path / name) in msg and "corrupt" in msg


@pytest.mark.parametrize(
    ("header", "what"),
    [
        (struct.pack(">II", 0x0803, 60000), "magic"),
        (struct.pack(">II", 0x0801, 59999), "dimensions"),
    ],
    ids=["magic", "dimensions"],
)
def test_bad_idx_header(tmp_path, header, what):
    name = "train-labels-idx1-ubyte.gz"
    link_files(tmp_path, skip=name)
    (tmp_path / name).write_bytes(gzip.compress(header + bytes(60000)))
    with pytest.raises(DataError) as e:
        build(root=str(tmp_path))
    msg = one_line(e)
    assert str(tmp_path / name) in msg and what in msg


def test_wrong_payload_size(tmp_path):
    name = "t10k-labels-idx1-ubyte.gz"
    link_files(tmp_path, skip=name)
    (tmp_path / name).write_bytes(gzip.compress(struct.pack(">II", 0x0801, 10000) + bytes(9999)))
    with pytest.raises(DataError) as e:
        build(root=str(tmp_path))
    assert str(tmp_path / name) in one_line(e)
