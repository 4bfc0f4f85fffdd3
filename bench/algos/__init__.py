"""Algorithm registry: one entry per ``algo=`` name.

QAT algorithms (issue: QAT algorithms) and PTQ methods (issues: quantization core, advanced PTQ) are registered
as :class:`Planned` until their capability lands, so a sweep naming them fails with a clear reason.
"""

from bench.algos.base import AVAILABLE, Algorithm, CellContext, CellOutcome, NotImplementedYet, Planned
from bench.algos.fp32 import FP32
from bench.algos.ptq import PTQ
from bench.registry import Registry

ALGOS: Registry[Algorithm] = Registry("algo")

ALGOS.register("fp32")(FP32())
ALGOS.register("ptq")(PTQ())
AVAILABLE.extend(["fp32", "ptq"])

_QAT = "QAT algorithms capability (issue 4: LSQ, LSQ+, PACT, DSQ, DoReFa, QIL, APoT)"
_PTQ = "advanced PTQ capability (issue 5: CLE, bias correction, AdaRound, BRECQ, QDrop, Bit-Split, IOSO)"
for _name, _kind, _desc, _cap in [
    ("lsq", "qat", "Learned Step Size Quantization", _QAT),
    ("lsqplus", "qat", "LSQ+ (learned offset)", _QAT),
    ("pact", "qat", "Parameterized Clipping Activation", _QAT),
    ("dsq", "qat", "Differentiable Soft Quantization", _QAT),
    ("dorefa", "qat", "DoReFa-Net", _QAT),
    ("qil", "qat", "Quantization Interval Learning (academic only)", _QAT),
    ("apot", "qat", "Additive Powers-of-Two (academic only)", _QAT),
    ("adaround", "ptq", "adaptive rounding", _PTQ),
    ("brecq", "ptq", "block reconstruction", _PTQ),
    ("qdrop", "ptq", "block reconstruction with activation drop", _PTQ),
    ("bitsplit", "ptq", "Bit-Split and Stitching with ECAQ", _PTQ),
    ("ioso", "ptq", "input/output channel-wise scale and offset", _PTQ),
]:
    ALGOS.register(_name)(Planned(_name, _kind, _desc, _cap))

__all__ = ["ALGOS", "Algorithm", "CellContext", "CellOutcome", "NotImplementedYet", "Planned"]
