import math

import pytest
import torch

from bench.engine.schedule import warmup_cosine, warmup_cosine_factor


def reference(step: int, total: int, warmup: int) -> float:
    # linear warm-up to the base lr, then half a cosine down to 0 at the last step
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


@pytest.mark.parametrize(("total", "warmup"), [(100, 10), (50, 0), (20, 20)])
def test_factor_matches_reference(total, warmup):
    for s in range(total):
        assert warmup_cosine_factor(s, total, warmup) == pytest.approx(reference(s, total, warmup))


def test_scheduler_drives_optimizer_lr():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.4)
    sched = warmup_cosine(opt, total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.2) and lrs[1] == pytest.approx(0.4)
    assert lrs[2] == pytest.approx(0.4) and lrs[-1] < lrs[5] < lrs[2]
