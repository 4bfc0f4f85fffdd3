"""Fixtures shared by the fused-kernel tests of ``bench.quant``."""

from __future__ import annotations

import pytest

from bench.quant import fused_divbn, fused_lsq


def _reset() -> None:
    fused_lsq.set_enabled(False)
    fused_lsq._checked.clear()
    fused_lsq._failed = False
    fused_divbn._width.clear()


@pytest.fixture
def fresh():
    """Fused kernels off and unprobed before and after the test."""
    _reset()
    yield
    _reset()
