"""A small calibrated model per profile for the deployment tests."""

from __future__ import annotations

import pytest
import torch


def _tiny_calibrated(profile: str, bits: int):
    from bench.models import build_model
    from bench.ptq.calibrate import calibrate
    from bench.quant.insert import prepare
    from bench.quant.profiles import load_profile

    torch.manual_seed(0)
    model = build_model("tiny", num_classes=10, in_chans=1)
    model.train()
    with torch.no_grad():  # BN statistics that are not the identity, so folding matters
        for _ in range(3):
            model(torch.randn(32, 1, 16, 16))
    model.eval()
    p = load_profile(profile)
    gm = prepare(model, p, w_bits=bits, a_bits=bits, first_last_bits=p.first_last_bits)
    calibrate(gm, torch.randn(64, 1, 16, 16), 64)
    return gm.eval(), p


@pytest.fixture
def tiny_calibrated():
    """``tiny_calibrated(profile, bits) -> (calibrated GraphModule in eval mode, HardwareProfile)``."""
    return _tiny_calibrated
