"""ImageNet path on a tiny generated ImageFolder: shapes, streaming, determinism, calibration, errors."""

from __future__ import annotations

import itertools
import zlib

import pytest
import torch
from PIL import Image

from bench.data import DataError, build_data
from bench.data import imagenet as inet
from bench.data.base import sample_indices

CLASSES = ["n001_cat", "n002_dog", "n003_fox"]
SIZES = [(40, 30), (150, 110), (48, 96)]  # varied sizes and aspect ratios, some below 224 px


def make_image(path, size, colour, mode: str = "RGB") -> None:
    g = torch.Generator().manual_seed(zlib.crc32(f"{path.name}{size}".encode()))
    w, h = size
    noise = torch.randint(0, 60, (h, w, 3), generator=g, dtype=torch.uint8)
    pixels = (torch.tensor(colour, dtype=torch.uint8) + noise).clamp_(0, 255).numpy()
    Image.fromarray(pixels).convert(mode).save(path)


@pytest.fixture
def folder(tmp_path):
    for split, count in (("train", 3), ("val", 2)):
        for c, name in enumerate(CLASSES):
            d = tmp_path / split / name
            d.mkdir(parents=True)
            for i in range(count):
                ext, mode = (".JPEG", "RGB") if i % 2 == 0 else (".png", "L" if c == 0 else "RGB")
                make_image(d / f"img{i}{ext}", SIZES[(i + c) % 3], (60 * c, 100, 180 - 60 * c), mode)
    return tmp_path


def build(root, seed: int = 0, augment: bool = True, num_workers: int = 0):
    return build_data(
        "imagenet",
        root=str(root),
        batch_size=4,
        eval_batch_size=3,
        seed=seed,
        augment=augment,
        num_workers=num_workers,
    )


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(loader)


def assert_same(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_shapes_and_metadata(folder):
    b = build(folder)
    assert (b.name, b.num_classes, b.in_chans, b.image_size) == ("imagenet", 3, 3, 224)
    assert (b.num_train, b.num_test, len(b.train), len(b.test)) == (9, 6, 3, 2)
    out = batches(b.train)
    assert [x.shape for x, _ in out] == [(4, 3, 224, 224)] * 2 + [(1, 3, 224, 224)]
    assert all(x.dtype == torch.float32 and y.dtype == torch.int64 for x, y in out)
    assert sorted(torch.cat([y for _, y in out]).tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    x, y = next(iter(b.test))
    assert x.shape == (3, 3, 224, 224) and y.tolist() == [0, 0, 1]  # val in folder order


def tensors_in(obj, seen=None) -> list[str]:
    """Names of torch.Tensor values reachable through attributes and containers of ``obj``."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, (str, bytes, int, float)):
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [type(obj).__name__]
    if isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, (list, tuple, set)):
        children = list(obj)
    else:
        children = list(getattr(obj, "__dict__", {}).values())
    return [t for c in children for t in tensors_in(c, seen)]


def test_streams_from_disk(folder):
    b = build(folder)
    for loader in (b.train, b.test):
        assert isinstance(loader.loader, torch.utils.data.DataLoader)
        assert tensors_in(loader.dataset) == []
        assert all(isinstance(p, str) for p, _ in loader.dataset.samples)
    # A file changed after the build is read as it is now: nothing was loaded up front.
    path = folder / "val" / CLASSES[0] / "img0.JPEG"
    before = next(iter(b.test))[0][0]
    Image.new("RGB", (50, 50), (255, 255, 255)).save(path, format="JPEG")
    after = next(iter(b.test))[0][0]
    assert not torch.equal(before, after)
    white = (1.0 - torch.tensor(inet.MEAN)) / torch.tensor(inet.STD)
    assert torch.allclose(after.mean((1, 2)), white, atol=0.05)


def test_deterministic_shuffle_and_augmentation(folder):
    state = torch.get_rng_state()
    a, b = build(folder, seed=1), build(folder, seed=1)
    a.train.set_epoch(2)
    b.train.set_epoch(2)
    e2 = batches(a.train)
    assert_same(e2, batches(b.train))
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is neither used nor advanced
    a.train.set_epoch(1)
    c = build(folder, seed=2)
    c.train.set_epoch(2)
    for other in (batches(a.train), batches(c.train)):
        assert not all(torch.equal(x, y) for (x, _), (y, _) in zip(e2, other, strict=True))


def test_workers_give_the_same_batches(folder):
    a, b = build(folder, seed=3), build(folder, seed=3, num_workers=1)
    a.train.set_epoch(1)
    b.train.set_epoch(1)
    assert_same(batches(a.train), batches(b.train))
    assert b.train.loader.persistent_workers and not a.train.loader.persistent_workers


@pytest.mark.parametrize("split, drop_last", [("train", True), ("test", False)])
def test_ddp_ranks_load_only_their_slice_of_each_batch(folder, split, drop_last):
    """DDP: each rank decodes its contiguous slice of every global batch; rank 0 + rank 1 = the one-process batch."""
    full = getattr(build(folder, seed=4), split)
    full.set_epoch(1)
    ref = batches(full)
    parts = []
    for rank in range(2):
        shard = getattr(build(folder, seed=4), split).shard(rank, 2, drop_last=drop_last)
        shard.set_epoch(1)
        parts.append(batches(shard))
        assert len(parts[-1]) == len(shard)
    n = full.num_samples
    expect = n // full.batch_size if drop_last else len(ref)
    assert len(parts[0]) == expect and expect >= 1
    for i in range(expect):
        pieces = [p[i] for p in parts if i < len(p)]
        assert torch.equal(torch.cat([x for x, _ in pieces]), ref[i][0])
        assert torch.equal(torch.cat([y for _, y in pieces]), ref[i][1])
    if drop_last:
        assert all(x.shape[0] == full.batch_size // 2 for p in parts for x, _ in p)


def test_calibration_batch_uses_test_transform(folder):
    b = build(folder, augment=True)
    c1 = b.calibration_batch(5, seed=0)
    assert c1.shape == (5, 3, 224, 224) and torch.equal(c1, b.calibration_batch(5, seed=0))
    idx = sample_indices(9, 5, 0)
    tf = inet.test_transform()
    expected = torch.stack([tf(Image.open(b.train.dataset.samples[i][0]).convert("RGB")) for i in idx.tolist()])
    assert torch.equal(c1, expected)
    with pytest.raises(DataError):
        b.calibration_batch(10, seed=0)


def test_fingerprint(folder):
    f1 = build(folder).fingerprint
    assert len(f1) == 64 and build(folder, seed=9).fingerprint == f1
    (folder / "val" / CLASSES[1] / "img0.JPEG").write_bytes(b"x" * 10)  # size change
    assert build(folder).fingerprint != f1


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("missing", ["", "train", "val"])
def test_missing_directories(tmp_path, folder, missing):
    root = folder if missing else tmp_path / "absent"
    if missing:
        for p in sorted((folder / missing).rglob("*"), key=lambda p: -len(p.parts)):
            p.unlink() if p.is_file() else p.rmdir()
        (folder / missing).rmdir()
    with pytest.raises(DataError) as e:
        build(root)
    msg = one_line(e)
    assert str(root / missing if missing else root) in msg and "<root>/train/<class>" in msg


def test_no_root_and_mismatched_classes(folder):
    with pytest.raises(DataError) as e:
        build_data("imagenet", root=None, batch_size=4, eval_batch_size=4, seed=0)
    assert "data.root" in one_line(e)
    extra = folder / "val" / "n004_owl"
    extra.mkdir()
    make_image(extra / "a.png", (32, 32), (0, 0, 0))
    with pytest.raises(DataError) as e:
        build(folder)
    assert "class" in one_line(e)


def test_empty_class_folder(folder):
    (folder / "train" / "n009_empty").mkdir()
    (folder / "val" / "n009_empty").mkdir()
    with pytest.raises(DataError) as e:
        build(folder)
    assert str(folder / "train") in one_line(e)


def test_islice_then_full_pass(folder):
    """Abandoning an iteration midway (smoke runs) does not disturb the next full pass."""
    b = build(folder, seed=5)
    first = next(itertools.islice(iter(b.train), 1))
    full = batches(b.train)
    assert torch.equal(first[0], full[0][0])
