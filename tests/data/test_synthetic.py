"""Synthetic dataset: fixed data, deterministic shuffling, learnability; registry and argument errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.data import DATASETS, DataError, Loader, build_data
from bench.data import synthetic as syn
from bench.registry import RegistryError

# Pinned so any change to the generated data (which would silently change test baselines) is noticed.
FINGERPRINT = "a25d310e56b7cb7f34e6e23405c4f5e489ecf5e6d96c21da181e528c5dbc2e6c"


def build(seed: int = 0, batch_size: int = 64):
    return build_data("synthetic", root=None, batch_size=batch_size, eval_batch_size=128, seed=seed)


def test_metadata_and_shapes():
    b = build()
    assert (b.name, b.num_classes, b.in_chans, b.image_size, b.num_train, b.num_test) == (
        "synthetic",
        10,
        1,
        32,
        1024,
        256,
    )
    assert isinstance(b.train, Loader) and isinstance(b.test, Loader)
    assert len(b.train) == 16 and len(b.test) == 2
    x, y = next(iter(b.train))
    assert x.shape == (64, 1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    xs, ys = zip(*b.test, strict=True)
    assert sum(len(t) for t in ys) == 256
    assert torch.bincount(torch.cat(ys)).tolist() == [26] * 6 + [25] * 4  # balanced classes


def test_data_is_fixed_and_fingerprint_stable():
    fresh = syn.load_tensors.__wrapped__()  # regenerate, bypassing the in-process cache
    cached = syn.load_tensors()
    for a, b in zip(fresh, cached, strict=True):
        assert a == b if isinstance(a, str) else torch.equal(a, b)
    assert build(seed=0).fingerprint == build(seed=123).fingerprint == fresh[-1]
    assert fresh[-1] == FINGERPRINT


def test_shuffle_deterministic():
    a, b, c = build(seed=1), build(seed=1), build(seed=2)
    for epoch in (0, 1):
        a.train.set_epoch(epoch)
        b.train.set_epoch(epoch)
        for (xa, ya), (xb, yb) in zip(a.train, b.train, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    a.train.set_epoch(0)
    assert not torch.equal(next(iter(a.train))[1], next(iter(c.train))[1])
    a.train.set_epoch(1)
    first_e1 = next(iter(a.train))[1]
    a.train.set_epoch(0)
    assert not torch.equal(first_e1, next(iter(a.train))[1])
    # An epoch still covers every sample exactly once.
    assert sorted(torch.cat([y for _, y in a.train]).tolist()) == sorted(syn.load_tensors()[1].tolist())


def test_calibration_batch():
    b = build()
    c = b.calibration_batch(32, seed=0)
    assert c.shape == (32, 1, 32, 32) and torch.equal(c, b.calibration_batch(32, seed=0))
    with pytest.raises(DataError):
        b.calibration_batch(1025, seed=0)
    with pytest.raises(DataError):
        b.calibration_batch(0, seed=0)


@pytest.fixture
def one_thread():
    # Tiny models run far slower with 2 intra-op threads on a busy 2-core machine (spin-waiting threads).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_tiny_cnn_learns(one_thread):
    torch.manual_seed(0)
    b = build(batch_size=32)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(4),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 10),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for epoch in range(2):
        b.train.set_epoch(epoch)
        for x, y in b.train:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    with torch.no_grad():
        correct = sum((model(x).argmax(1) == y).sum().item() for x, y in b.test)
    assert correct / b.num_test > 0.9


def test_unknown_dataset():
    with pytest.raises(RegistryError) as e:
        build_data("mnist", root=None, batch_size=8, eval_batch_size=8, seed=0)
    msg = str(e.value)
    assert "mnist" in msg and "fashion_mnist" in msg and "synthetic" in msg and "imagenet" in msg
    assert DATASETS.names() == ["fashion_mnist", "imagenet", "synthetic"]


@pytest.mark.parametrize(
    "kwargs", [{"batch_size": 0}, {"eval_batch_size": -1}, {"num_workers": -1}, {"batch_size": 1.5}]
)
def test_bad_arguments(kwargs):
    args = {"root": None, "batch_size": 8, "eval_batch_size": 8, "seed": 0} | kwargs
    with pytest.raises(DataError) as e:
        build_data("synthetic", **args)
    assert next(iter(kwargs)) in str(e.value)
