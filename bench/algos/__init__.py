"""Algorithm registry: one entry per ``algo=`` name.

Advanced PTQ methods (issue: advanced PTQ) are registered as :class:`Planned` until their capability lands, so a
sweep naming them fails with a clear reason.
"""

from bench.algos.apot import APoT
from bench.algos.base import AVAILABLE, Algorithm, CellContext, CellOutcome, NotImplementedYet, Planned
from bench.algos.dorefa import DoReFa
from bench.algos.dsq import DSQ
from bench.algos.fp32 import FP32
from bench.algos.lsq import LSQ
from bench.algos.lsqplus import LSQPlus
from bench.algos.pact import PACT
from bench.algos.ptq import PTQ
from bench.algos.qil import QIL
from bench.registry import Registry

ALGOS: Registry[Algorithm] = Registry("algo")

for _algo in (FP32(), PTQ(), LSQ(), LSQPlus(), PACT(), DSQ(), DoReFa(), QIL(), APoT()):
    ALGOS.register(_algo.name)(_algo)
    AVAILABLE.append(_algo.name)

_PTQ = "advanced PTQ capability (issue 5: CLE, bias correction, AdaRound, BRECQ, QDrop, Bit-Split, IOSO)"
for _name, _kind, _desc, _cap in [
    ("adaround", "ptq", "adaptive rounding", _PTQ),
    ("brecq", "ptq", "block reconstruction", _PTQ),
    ("qdrop", "ptq", "block reconstruction with activation drop", _PTQ),
    ("bitsplit", "ptq", "Bit-Split and Stitching with ECAQ", _PTQ),
    ("ioso", "ptq", "input/output channel-wise scale and offset", _PTQ),
]:
    ALGOS.register(_name)(Planned(_name, _kind, _desc, _cap))

__all__ = ["ALGOS", "Algorithm", "CellContext", "CellOutcome", "NotImplementedYet", "Planned"]
