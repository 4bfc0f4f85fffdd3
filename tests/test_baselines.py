import pytest
import torch

from bench import baselines
from bench.baselines import CheckpointError, load_checkpoint, load_or_train
from bench.data import build_data
from bench.models import build_model


def _data():
    return build_data("synthetic", root=None, batch_size=64, eval_batch_size=256, seed=0, augment=False)


def test_train_then_cache_hit(make_cfg, tmp_path):
    cfg = make_cfg("data=synthetic", "arch=tiny", "debug=smoke")
    data = _data()
    m1, meta1 = load_or_train(cfg, data)
    assert meta1["source"] == "trained"
    path = baselines.baseline_path(cfg, baselines.baseline_key(cfg, data.fingerprint))
    assert path.is_file() and not path.with_suffix(".partial.pt").exists()
    m2, meta2 = load_or_train(cfg, data)
    assert meta2["source"] == "cache" and meta2["path"] == str(path)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # another recipe is another cache entry
    other = make_cfg("data=synthetic", "arch=tiny", "debug=smoke", "baseline.lr=0.01")
    assert baselines.baseline_path(other, baselines.baseline_key(other, data.fingerprint)) != path


def test_truncated_cache_file_is_an_error_not_retrained(make_cfg):
    cfg = make_cfg("data=synthetic", "arch=tiny", "debug=smoke")
    data = _data()
    load_or_train(cfg, data)
    path = baselines.baseline_path(cfg, baselines.baseline_key(cfg, data.fingerprint))
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError) as e:
        load_or_train(cfg, data)
    assert "corrupt checkpoint" in str(e.value) and "\n" not in str(e.value)
    assert path.read_bytes() == blob[: len(blob) // 2]  # left for the user to inspect


def test_user_checkpoint_mismatch_and_load(make_cfg, tmp_path):
    data = _data()
    torch.manual_seed(1)
    model = build_model("tiny", num_classes=10, in_chans=1)
    good = tmp_path / "good.pt"
    torch.save({"state_dict": model.state_dict()}, good)
    cfg = make_cfg("data=synthetic", "arch=tiny", f"arch.checkpoint={good}")
    loaded, meta = load_or_train(cfg, data)
    assert meta["source"] == "user"
    pairs = zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    bad = tmp_path / "bad.pt"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="does not match the model"):
        load_or_train(make_cfg("data=synthetic", "arch=tiny", f"arch.checkpoint={bad}"), data)


def test_pickled_object_refused(tmp_path):
    # weights_only=True: arbitrary pickled objects are never executed
    p = tmp_path / "evil.pt"
    torch.save({"f": print}, p)
    with pytest.raises(CheckpointError):
        load_checkpoint(p)


def test_interrupted_pretraining_resumes(make_cfg, monkeypatch):
    cfg = make_cfg("data=synthetic", "arch=tiny", "baseline.epochs=2", "debug.max_train_batches=4",
                   "debug.max_eval_batches=1")
    data = _data()
    reference, _ = load_or_train(make_cfg("data=synthetic", "arch=tiny", "baseline.epochs=2",
                                          "debug.max_train_batches=4", "debug.max_eval_batches=1",
                                          f"cache_dir={cfg.cache_dir}_ref"), data)
    real_save = baselines.save_checkpoint_atomic
    calls = []

    def die_after_first_epoch(obj, path):
        real_save(obj, path)
        calls.append(path)
        if path.name.endswith(".partial.pt"):
            raise KeyboardInterrupt  # the run is killed right after epoch 1 was saved

    monkeypatch.setattr(baselines, "save_checkpoint_atomic", die_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        load_or_train(cfg, data)
    monkeypatch.setattr(baselines, "save_checkpoint_atomic", real_save)
    resumed, meta = load_or_train(cfg, data)
    assert meta["source"] == "trained"
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
