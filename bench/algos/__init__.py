"""Algorithm registry: one entry per ``algo=`` name (FP32 reference, QAT algorithms, PTQ methods)."""

from bench.algos.apot import APoT
from bench.algos.base import AVAILABLE, Algorithm, CellContext, CellOutcome, NotImplementedYet, Planned
from bench.algos.bitsplit import BitSplit
from bench.algos.dorefa import DoReFa
from bench.algos.dsq import DSQ
from bench.algos.fp32 import FP32
from bench.algos.lsq import LSQ
from bench.algos.lsqplus import LSQPlus
from bench.algos.pact import PACT
from bench.algos.ptq import PTQ
from bench.algos.qil import QIL
from bench.algos.recon import BRECQ, IOSO, AdaRound, QDrop
from bench.registry import Registry

ALGOS: Registry[Algorithm] = Registry("algo")

for _algo in (FP32(), PTQ(), LSQ(), LSQPlus(), PACT(), DSQ(), DoReFa(), QIL(), APoT(), AdaRound(), BRECQ(), QDrop(),
              BitSplit(), IOSO()):
    ALGOS.register(_algo.name)(_algo)
    AVAILABLE.append(_algo.name)

__all__ = ["ALGOS", "Algorithm", "CellContext", "CellOutcome", "NotImplementedYet", "Planned"]
