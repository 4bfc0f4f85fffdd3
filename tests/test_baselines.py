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
    assert meta2["source"] == "cached" and meta2["path"] == str(path)
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


# ---------------------------------------------------------------- shipped baselines (bench/shipped)

MINIS = ["resnet18_mini", "resnet50_mini", "mobilenetv2_mini", "efficientnet_lite0_mini", "regnetx_600mf_mini"]


def test_manifest_lists_every_mini_with_hashes_recipe_and_accuracy():
    import json

    manifest = json.loads((baselines.SHIPPED_DIR / baselines.MANIFEST_NAME).read_text())
    entries = {e["arch"]: e for e in manifest["baselines"] if e["data"] == "fashion_mnist"}
    assert sorted(entries) == sorted(MINIS)
    for arch, e in entries.items():
        path = baselines.SHIPPED_DIR / e["file"]
        assert baselines.file_sha256(path) == e["sha256"]  # the committed file is the one the manifest names
        state = load_checkpoint(path)
        assert baselines.weights_sha256(state) == e["weights_sha256"]
        assert e["recipe"]["arch"] == arch and e["recipe"]["data_fingerprint"] == e["data_fingerprint"]
        assert 90.0 <= e["top1"] <= e["top5"] <= 100.0
        assert path.stat().st_size < 2_000_000  # weights only: a few MB in all


def test_a_mini_cell_starts_from_the_shipped_weights_and_never_trains(make_cfg, tmp_path):
    from bench import runner

    cfg = make_cfg("algo=ptq", "hw=tvm", "debug=smoke")  # fashion_mnist, resnet18_mini: the defaults
    rec = runner.run(cfg, tmp_path / "out")
    entry = baselines.shipped_entry("resnet18_mini", "fashion_mnist")
    b = rec["baseline"]
    assert b["source"] == "shipped" and b["sha256"] == entry["weights_sha256"]
    assert b["file_sha256"] == entry["sha256"] and b["manifest_top1"] == entry["top1"]
    assert not (tmp_path / "cache" / "baselines").exists()  # nothing trained, nothing cached
    # the recipe does not identify a shipped cell (its weights do): changing it changes nothing
    assert runner.cell_hash(make_cfg("algo=ptq", "hw=tvm", "baseline.epochs=1")) == runner.cell_hash(
        make_cfg("algo=ptq", "hw=tvm"))
    own = make_cfg("algo=ptq", "hw=tvm", "arch.pretrained=false")
    assert runner.cell_hash(own) != runner.cell_hash(make_cfg("algo=ptq", "hw=tvm"))
    assert runner.cell_hash(make_cfg("algo=ptq", "hw=tvm", "arch.pretrained=false", "baseline.epochs=1")) != \
        runner.cell_hash(own)


def _copy_shipped(tmp_path, monkeypatch):
    import shutil

    dst = tmp_path / "shipped"
    shutil.copytree(baselines.SHIPPED_DIR, dst)
    monkeypatch.setenv("BENCH_SHIPPED", str(dst))
    baselines._manifest.cache_clear()
    return dst


def test_a_shipped_file_whose_hash_does_not_match_is_a_one_line_error(tmp_path, monkeypatch):
    dst = _copy_shipped(tmp_path, monkeypatch)
    f = dst / "fashion_mnist" / "mobilenetv2_mini.pt"
    blob = bytearray(f.read_bytes())
    blob[-100] ^= 0xFF  # one flipped byte: still loadable, but not the shipped weights
    f.write_bytes(bytes(blob))
    data = build_data("fashion_mnist", root=None, batch_size=128, eval_batch_size=512, seed=0)
    with pytest.raises(CheckpointError) as e:
        baselines.load_shipped("mobilenetv2_mini", data, build_model("mobilenetv2_mini", 10, 1))
    msg = str(e.value)
    assert "\n" not in msg and str(f) in msg and "the manifest says" in msg
    f.unlink()
    with pytest.raises(CheckpointError, match="is missing"):
        baselines.load_shipped("mobilenetv2_mini", data, build_model("mobilenetv2_mini", 10, 1))
    baselines._manifest.cache_clear()


def test_no_shipped_baseline_or_another_dataset_is_an_error_not_a_training(make_cfg):
    data = _data()  # synthetic: no shipped baseline, and not the data they were trained on
    with pytest.raises(CheckpointError, match=r"no shipped FP32 baseline of arch=resnet18_mini on data=synthetic.*"
                                              r"arch.pretrained=false"):
        load_or_train(make_cfg("data=synthetic", "arch=resnet18_mini"), data)


def test_a_dataset_with_another_fingerprint_is_refused(tmp_path, monkeypatch):
    import json

    dst = _copy_shipped(tmp_path, monkeypatch)
    m = json.loads((dst / baselines.MANIFEST_NAME).read_text())
    for e in m["baselines"]:
        e["data_fingerprint"] = "0" * 64
    (dst / baselines.MANIFEST_NAME).write_text(json.dumps(m))
    data = build_data("fashion_mnist", root=None, batch_size=128, eval_batch_size=512, seed=0)
    with pytest.raises(CheckpointError, match="fingerprint 0000000000000000"):
        baselines.load_shipped("resnet18_mini", data, build_model("resnet18_mini", 10, 1))
    baselines._manifest.cache_clear()


# ---------------------------------------------------------------- published ImageNet weights (arch.pretrained)


def test_imagenet_arch_loads_published_weights_from_a_local_file(make_cfg, tmp_path):
    import timm

    torch.manual_seed(3)
    ref = timm.create_model("resnet18", pretrained=False)  # stands in for timm's published file (offline here)
    f = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), f)
    cfg = make_cfg("data=synthetic", "arch=resnet18", "arch.pretrained=true", f"arch.pretrained_file={f}")
    model, meta = load_or_train(cfg, _data())
    assert meta["source"] == "pretrained" and meta["file_sha256"] == baselines.file_sha256(f)
    got = model.state_dict()
    # every published tensor but the classifier (1000 ImageNet classes here 10) and the stem (3 channels here 1)
    same = [k for k, v in ref.state_dict().items() if k in got and got[k].shape == v.shape]
    assert len(same) >= len(ref.state_dict()) - 4 and all(torch.equal(got[k], ref.state_dict()[k]) for k in same)


def test_missing_published_weights_say_where_to_put_them(make_cfg, tmp_path, monkeypatch):
    from bench.models.imagenet import PretrainedError, resolve_pretrained_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty Hugging Face cache
    with pytest.raises(PretrainedError) as e:
        resolve_pretrained_file("mobilenetv2")
    msg = str(e.value)
    assert "\n" not in msg and "huggingface.co/timm/mobilenetv2_100" in msg and "arch.pretrained_file=PATH" in msg
    bad = tmp_path / "not_weights.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    cfg = make_cfg("data=synthetic", "arch=resnet18", "arch.pretrained=true", f"arch.pretrained_file={bad}")
    with pytest.raises(PretrainedError, match="does not hold resnet18 weights"):
        load_or_train(cfg, _data())
