import copy
import math

import torch

from bench.data import build_data
from bench.engine import TrainHooks, TrainRecipe, train
from bench.engine.metrics import MetricsWriter, read_metrics
from bench.models import build_model

RECIPE = TrainRecipe(epochs=3, lr=0.05, weight_decay=1e-4)


def _setup(seed=0):
    torch.manual_seed(seed)
    data = build_data("synthetic", root=None, batch_size=64, eval_batch_size=256, seed=seed, augment=False)
    return build_model("tiny", num_classes=data.num_classes, in_chans=data.in_chans), data


def test_trains_synthetic_and_writes_metrics(tmp_path):
    model, data = _setup()
    res = train(model, data.train, data.test, RECIPE, metrics=MetricsWriter(tmp_path / "m.jsonl"), progress=False)
    assert res.status == "ok" and res.epochs_done == 3
    rows = read_metrics(tmp_path / "m.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["test_top1"] > 60.0  # chance is 10%
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[-1]["lr"] < 0.05 * 0.1  # cosine decayed to ~0 at the end


class Counting(TrainHooks):
    def __init__(self):
        self.steps, self.epochs = [], []

    def on_step(self, step, model):
        self.steps.append(step)

    def on_epoch_end(self, epoch, model):
        self.epochs.append(epoch)


def test_hooks_and_batch_cap():
    model, data = _setup()
    hooks = Counting()
    res = train(model, data.train, data.test, TrainRecipe(epochs=2, lr=0.05, weight_decay=0.0), hooks=hooks,
                max_train_batches=3, max_eval_batches=1, progress=False)
    assert res.status == "ok" and hooks.steps == list(range(1, 7)) and hooks.epochs == [1, 2]


def test_divergence_gives_nc_not_crash(tmp_path):
    model, data = _setup()
    res = train(model, data.train, data.test, TrainRecipe(epochs=2, lr=1e12, weight_decay=0.0),
                metrics=MetricsWriter(tmp_path / "m.jsonl"), progress=False)
    assert res.status == "nc" and "non-finite" in res.reason
    assert read_metrics(tmp_path / "m.jsonl")[-1]["status"] == "nc"


def test_resume_equals_uninterrupted():
    model_a, data = _setup()
    full = train(model_a, data.train, data.test, RECIPE, progress=False)

    states = []
    model_b, data_b = _setup()
    # the state saved after epoch 1 stands for a run killed then; resume it in a fresh model
    train(model_b, data_b.train, data_b.test, RECIPE, progress=False,
          save_state=lambda s: states.append(copy.deepcopy(s)))
    model_c, data_c = _setup()
    resumed = train(model_c, data_c.train, data_c.test, RECIPE, progress=False, resume=states[0])
    assert resumed.epochs_done == 3
    for a, c in zip(full.history, resumed.history, strict=True):
        assert math.isclose(a["test_top1"], c["test_top1"]) and math.isclose(a["train_loss"], c["train_loss"])
    for pa, pc in zip(model_a.state_dict().values(), model_c.state_dict().values(), strict=True):
        assert torch.equal(pa, pc)
