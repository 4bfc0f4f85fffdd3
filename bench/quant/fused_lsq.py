"""LSQ's fake quantizer as fused CPU kernels: forward in one pass over ``x``, backward in one pass plus the gradient
sums, hand-written in C++ (``lsq_kernels.cpp``, built once per machine by ``torch.utils.cpp_extension``), one
autograd node defined in C++ (backward runs without Python).

Bit for bit the eager kernel's numbers: every element goes through the same IEEE operations in the same order as in
:mod:`bench.quant.lsq` (a product with the reciprocal of the step, a rounding, a clamp, a product; comparisons,
selections and products in backward), built without floating-point contraction or fast-math, and the sums over
elements stay the eager reductions (ATen's ``sum`` over the same dimensions of products of the same layout, called
from C++), so their summation order is the eager one. The step's reciprocal, the rounded zero point and the code
bounds are derived in C++ per channel with the eager ops' IEEE results. What changes is the number of passes over
memory (forward 4 -> 1, backward about 8 -> 2), what forward saves for backward (the input instead of two new tensors
of its size) and the Python work per call (one call forward, none backward, instead of about twenty small ops and,
with the learned step's ``positive``, two more autograd nodes). The loops are
branch-free (selections on bits), so that the compiler vectorizes them without fast-math: a ``c ? a : b`` between
float expressions kept backward scalar, 20x slower. Used on the CPU only; the first use of each variant in a process
compares the kernels with the eager formulas on probe tensors (ties, the bands just outside the grid, random values)
and falls back to eager, with a warning, if they differ or if the build fails (no C++ compiler): numbers never depend
on which kernel ran. The same extension holds strategy 4's fold kernels (:mod:`bench.quant.fused_fold`), QDrop's
masks (:mod:`bench.ptq.drop`) and the first conv's input gradient (:mod:`bench.quant.fused_conv`).

The extension is built with ``-march=native`` into torch's extension cache (``$TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``) under a name that includes a fingerprint of the CPU (and of the flags and the source),
so a home directory shared by different machines (a cluster) never loads a build for another instruction set. The
first build takes about half a minute; later processes load it in well under a second.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from bench.quant.lsq_eager import EagerLSQ

log = logging.getLogger(__name__)

ROUNDINGS = {"half_even": 0, "half_up": 1, "half_away": 2}  # the kernels' rounding modes (fixedpoint.round_float)
# no FMA, no reassociation: IEEE per op; OpenMP: at::parallel_for uses torch's threads only in an OpenMP build (torch's
# own libgomp.so.1, already loaded, serves it)
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-fast-math", "-fopenmp"]
CPU_KEYS = ("vendor_id", "model name", "flags", "Features", "CPU implementer", "CPU architecture", "CPU variant",
            "CPU part")  # /proc/cpuinfo: what -march=native sees, on x86-64 and on ARM
SOURCE = Path(__file__).with_name("lsq_kernels.cpp")

_enabled = False  # the run's ``fused`` setting (bench.runner); off until a run or a benchmark turns it on
_failed = False  # the build failed or a probe disagreed: eager for the rest of the process, whatever is asked
_checked: dict[tuple, bool] = {}  # variant -> the probe agreed with the eager formulas
_ext: Any = None  # the loaded extension


def enabled() -> bool:
    """Whether the fused kernels are in use (turned on, and no failure so far in this process)."""
    return _enabled and not _failed


def set_enabled(flag: bool) -> None:
    """Turn the fused kernels on or off for this process."""
    global _enabled
    _enabled = bool(flag)


def _fail() -> None:
    global _failed
    # warned once per process: later set_enabled(True) calls (cells run one after another in it) do not retry; the
    # parallel launcher forks each cell from a server that never probed, so each of its cells probes (and warns) once
    _failed = True


def usable(x: torch.Tensor) -> bool:
    """Whether ``x`` can go through the fused kernels: a float32 CPU tensor with fused kernels on."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and enabled()


def _fingerprint() -> str:
    """A short hash of what the build depends on: the CPU (its model and feature flags, for ``-march=native``), the
    flags and the kernels' source (a source installed over an older one with an older mtime is not taken for built)."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = "\n".join(sorted({ln for ln in info if ln.split(":")[0].strip() in CPU_KEYS}))
    except OSError:
        cpu = ""
    text = "\n".join([platform.machine(), platform.processor(), cpu, *FLAGS, SOURCE.read_text()])
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _ninja_dir() -> str | None:
    """The folder of the ``ninja`` package's binary, if installed and not already on PATH (torch builds with it)."""
    try:
        import ninja
    except ImportError:
        return None
    d = getattr(ninja, "BIN_DIR", "")
    path = os.environ.get("PATH", "").split(os.pathsep)
    return d if d and Path(d, "ninja").is_file() and d not in path else None


def _kernels() -> Any:
    """The C++ extension, built on first use on this machine (then loaded from torch's extension cache)."""
    global _ext
    if _ext is None:
        cpp_log = logging.getLogger("torch.utils.cpp_extension")
        level, path = cpp_log.level, os.environ.get("PATH")
        cpp_log.setLevel(logging.ERROR)  # its import warns that no CUDA is found: a CPU build needs none
        ninja_dir = _ninja_dir()
        if ninja_dir:  # for this build only: the pip package's ninja, whether or not the venv is on PATH
            os.environ["PATH"] = ninja_dir + (os.pathsep + path if path else "")
        try:
            from torch.utils.cpp_extension import load

            _ext = load(name=f"bench_lsq_{_fingerprint()}", sources=[str(SOURCE)], extra_cflags=FLAGS,
                        extra_ldflags=["-fopenmp"], verbose=False)
        finally:
            cpp_log.setLevel(level)
            if ninja_dir:
                if path is None:
                    os.environ.pop("PATH", None)
                else:
                    os.environ["PATH"] = path
    return _ext


def extension() -> Any:
    """The C++ extension (these kernels and QDrop's counter-based masks, :mod:`bench.ptq.drop`), built on first use;
    raises where it cannot be built (no C++ compiler)."""
    return _kernels()


def _reason(msg: str) -> str:
    """One line saying why a build failed: torch's message starts with ninja's echo of the compile command, the
    compiler's own error comes later."""
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    for ln in lines:  # a compiler's "...: fatal error: ...", a shell's "c++: not found"
        if "error:" in ln.lower() or "not found" in ln.lower():
            return ln[:300]
    return lines[0][:300] if lines else ""


def _probe(key: tuple) -> bool:
    """:func:`apply` against the eager kernel (:class:`bench.quant.lsq_eager.EagerLSQ`) through autograd, on values
    that hit every branch: exact ties (steps that are powers of two, so ``u`` is exactly ``k + 1/2``), codes at the
    grid's ends, the bands just outside it, random values and random steps, zero points of 0 and not; per channel with
    runs of one element and runs longer than a vector, per tensor longer than one thread's share and with a vector
    loop's tail; a raw step taken through ``positive`` (negative, at and below its floor); a gradient that is not
    contiguous (the eager route in C++). The output, the input gradient and the summed gradients of the step and the
    zero point are compared bit for bit."""
    rounding, has_z, need_z, per_channel = key
    g = torch.Generator().manual_seed(0)
    qmin, qmax, gf, eps = -8, 7, 0.3, 2.0**-10
    ch_axis = 1 if per_channel else None
    for shape in ([3, 7, 113], [2, 5, 1], [1, 3, 16 * 2048 + 5]) if per_channel else ([16 * 97 + 5], [40001]):
        n = torch.Size(shape).numel()
        k = torch.arange(-12, 12.25, 0.25)  # in steps: ties, the grid's ends (-8 / 7 here), the bands around them
        k = k.repeat(n // len(k) + 1)[:n][torch.randperm(n, generator=g)]
        k = (k + (torch.rand(n, generator=g) < 0.3) * torch.randn(n, generator=g)).reshape(shape)
        pshape = [shape[1]] if per_channel else [1]  # steps / zero points as the quantizers hold them
        bshape = [1, shape[1], 1] if per_channel else []  # and as they broadcast
        zs = [None] if not has_z else [torch.zeros(pshape), torch.randint(-3, 4, pshape, generator=g) + 0.3]
        steps = [2.0 ** torch.randint(-4, 0, pshape, generator=g).float(), 0.05 + torch.rand(pshape, generator=g)]
        for z in zs:
            for s in steps:
                x, grad = k * s.reshape(bshape), torch.randn(shape, generator=g)
                raw = -s  # through positive: a negative raw step, one at its floor, one below it (per channel)
                raw.view(-1)[0] = eps
                if raw.numel() > 1:
                    raw.view(-1)[-1] = eps / 3
                zt = [] if z is None else [z.clone().requires_grad_(need_z)]
                cases = [(s, None, grad), (raw, eps, grad),
                         (s, None, grad.transpose(0, -1).contiguous().transpose(0, -1))]  # a non-contiguous gradient
                for step, pos, gr in cases:
                    def eager(*t: torch.Tensor, pos: float | None = pos) -> torch.Tensor:
                        sp = t[1] if pos is None else t[1].abs().clamp_min(pos)
                        return EagerLSQ.apply(t[0], sp, t[2] if has_z else None, qmin, qmax, gf, ch_axis, rounding)

                    def fused(*t: torch.Tensor, pos: float | None = pos) -> torch.Tensor:
                        return apply(t[0], t[1], t[2] if has_z else None, qmin, qmax, gf, ch_axis, rounding, pos)

                    ts = [x.requires_grad_(True), step.clone().requires_grad_(True), *zt]
                    if not agree(eager, fused, ts, (), gr):
                        return False
    return True


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit up to NaN payloads: values, NaN positions and signs (signed zeros): what a probe asks."""
    return (torch.equal(torch.nan_to_num(a, nan=7.5), torch.nan_to_num(b, nan=7.5))
            and torch.equal(torch.isnan(a), torch.isnan(b)) and torch.equal(torch.signbit(a), torch.signbit(b)))


def outputs_and_grads(fn: Callable[..., torch.Tensor], tensors: Sequence[torch.Tensor], rest: Sequence[Any],
                      grad: torch.Tensor, plain: bool = True) -> list[torch.Tensor]:
    """``fn(*tensors, *rest)``, the gradients (for ``grad``) of those of ``tensors`` that require one, in order, and
    with ``plain`` ``fn``'s output without gradients: what a probe compares between the eager and the fused route."""
    leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in tensors]
    out = fn(*leaves, *rest)
    out.backward(grad)
    res = [out.detach()] + [t.grad for t in leaves if t.requires_grad]
    if plain:
        with torch.no_grad():
            res.append(fn(*[t.detach() for t in tensors], *rest))
    return res


def agree(eager: Callable[..., torch.Tensor], fused: Callable[..., torch.Tensor], tensors: Sequence[torch.Tensor],
          rest: Sequence[Any], grad: torch.Tensor, plain: bool = True) -> bool:
    """Whether ``fused`` gives :func:`outputs_and_grads` of ``eager`` bit for bit (:func:`same_bits`)."""
    want, got = (outputs_and_grads(f, tensors, rest, grad, plain) for f in (eager, fused))
    return all(same_bits(a, b) for a, b in zip(want, got, strict=True))


def eager_grads(fn: Callable[..., torch.Tensor], tensors: Sequence[torch.Tensor], needs: Sequence[bool],
                grad: torch.Tensor) -> list[torch.Tensor | None]:
    """The gradients autograd gives ``fn(*tensors)`` for ``grad`` (``None`` where ``needs`` says no): a fused
    kernel's backward for a gradient that is not contiguous, whose eager results follow the gradient's layout."""
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(n) for t, n in zip(tensors, needs, strict=True)]
        wanted = [t for t in leaves if t.requires_grad]
        got = iter(torch.autograd.grad(fn(*leaves), wanted, grad) if wanted else ())
        return [next(got) if n else None for n in needs]


def probed(key: tuple, probe: Callable[[], bool]) -> bool:
    """Whether the fused kernels are on and those behind ``key`` agree with their eager formulas: ``probe()`` runs on
    the first use of ``key`` in this process; a failed build or a disagreement turns every fused kernel off for the
    rest of it, with one warning (eager kernels give the same numbers)."""
    if not enabled():
        return False
    if key not in _checked:
        try:
            _kernels()
            with torch.enable_grad():  # probes may compare gradients; the first use can come in an evaluation
                ok = probe()
        except Exception as e:  # no compiler, an unsupported platform: eager gives the same numbers
            log.warning("fused LSQ kernels unavailable (%s: %s); eager kernels, same numbers", type(e).__name__,
                        _reason(str(e)))
            _fail()
            return False
        if not ok:
            log.warning("fused LSQ kernels differ from the eager formulas on this machine (%s); eager kernels", key)
            _fail()
            return False
        _checked[key] = True
    return enabled()


def variant(x: torch.Tensor, rounding: str, has_z: bool, need_z: bool, ch_axis: int | None) -> tuple | None:
    """The fused kernels' variant for ``x`` (the rounding, with or without a zero point, whether its gradient is
    needed, per tensor or per channel), probed against the eager formulas on its first use in this process; ``None``
    where the fused kernels cannot be used (not a contiguous float32 CPU tensor, turned off, or failed: then they are
    off for the rest of the process). Contiguous only: the gradient sums then see the memory layout the eager
    kernel's products have, so they add in the same order."""
    if not usable(x) or not x.is_contiguous() or rounding not in ROUNDINGS:
        return None
    key = (rounding, has_z, need_z, ch_axis is not None)
    return key if probed(key, lambda: _probe(key)) else None


def apply(x: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None, qmin: int, qmax: int, grad_factor: float,
          ch_axis: int | None, rounding: str, positive_eps: float | None = None) -> torch.Tensor:
    """LSQ's fake quantizer (:func:`bench.quant.lsq.lsq_fake_quantize`'s arguments, ``ch_axis`` non-negative) as one
    autograd node of the C++ extension, for a variant :func:`variant` accepted: forward in one pass over ``x``,
    backward (in C++, without Python: no Python call, context or GIL per quantizer per step) in one pass plus the eager
    kernel's sums, given a contiguous gradient, and otherwise the eager kernel's ops, called from C++ (its products
    and sums follow the gradient's layout). ``positive_eps``: ``s`` is the raw learned step, taken through
    ``s.abs().clamp_min(positive_eps)`` with those ATen ops, forward and backward."""
    return _kernels().lsq_apply(x, s, z, qmin, qmax, ROUNDINGS[rounding], -1 if ch_axis is None else ch_axis,
                                grad_factor, -1.0 if positive_eps is None else positive_eps)
