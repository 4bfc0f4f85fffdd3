"""Integer-only reference execution of a prepared, calibrated model (MQBench Sec. 3.1, Eq. 2-3).

:class:`IntegerExecutor` walks the ``torch.fx`` graph of a model from ``bench.quant.insert.prepare`` (after
calibration or training) and computes every layer with integers, as the profile's target would:

- the network input is quantized once by its input quantizer (the host's job); from there on every tensor is an
  :class:`IntTensor`: integer codes with a scale and zero point, per tensor or per channel;
- conv / linear: ``acc = sum (q_x - z_x)(q_w - z_w) + b_int`` in int32 with ``b_int = round(b / (s_w s_x))``
  (accumulators are checked for overflow and saturated as hardware does); the products are summed in float64, which
  is exact for integers below 2^53, so the result is the integer sum. The weight codes are read off the weight the
  fake-quant model uses (``weight_fq(w)``), and a quantizer whose output is not ``s * (code - z)`` on a uniform grid
  (APoT's levels, IOSO's input-channel factors) is refused with the layer named;
- a float BN kept by the academic profile (strategy -1) becomes a per-channel rescale plus an int32 bias;
- ReLU / ReLU6 / hardtanh / CLE's per-channel clip stay pending and are applied as clamps when the tensor is
  requantized (``clamp(requant(acc), q(lo), q(hi))``, exact), on the accumulator where it is read directly, and on
  the dequantized value where a float layer reads it (graph 1);
- an activation quantizer requantizes to its grid: ``q = clamp(requant(q_in - z_in, s_in / s_out) + z_out)`` with the
  profile's ``deploy.requant`` / ``deploy.rounding`` (``bench.quant.fixedpoint``);
- a residual add of two quantized tensors rescales both inputs to a common fine grid (``2 max(s_a, s_b) / 2^20``,
  TFLite's left shift of 20) and adds integers; average pooling sums codes (scale ``s / N``) and its re-quantizer
  divides by ``N`` with the target's arithmetic; max pooling and flatten act on codes;
- the logits are the last accumulators times their scale (``s_x s_w`` per class).

Where a target leaves a tensor in float between integer layers it is a :class:`FloatTensor` (float32): the layers of
graph 1 (academic, ACL: "the rest of the network in FP32", MQBench App. E) dequantize their accumulators, and a
residual add fused with the conv of its main branch (graph 2, TensorRT) adds in the kernel's fp32 epilogue. A float
tensor is quantized like the network input (``round(x / s) + z`` with the target's rounding).
"""

from __future__ import annotations

import copy
import math
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from bench.errors import BenchError
from bench.quant.clip import ChannelClip
from bench.quant.fixedpoint import requantize, round_float
from bench.quant.insert import TiedRequant, convert_folded
from bench.quant.qmodules import QuantConv2d, QuantConvBn2d, QuantLinear
from bench.quant.quantizer import FakeQuantize

INT32_MAX = 2**31 - 1
ADD_SHIFT = 20  # residual adds work on a grid 2^20 finer than their coarser input (TFLite's left_shift)

_RELU_FUNCS = {torch.relu, F.relu}
_ADD_FUNCS = {operator.add, torch.add, operator.iadd}
_CAT_FUNCS = {torch.cat, torch.concat}
_PASS_MODULES = (nn.Flatten, nn.Dropout, nn.Identity)
_PASS_FUNCS = {torch.flatten, torch.reshape}
_PASS_METHODS = {"flatten", "view", "reshape", "contiguous", "squeeze", "unsqueeze"}


class NotExecutable(BenchError):
    """The model contains something integer hardware does not run (named in the one-line message)."""


@dataclass
class IntTensor:
    """Integer codes ``q`` (int64) standing for ``(q - zero) * scale``; ``scale`` / ``zero`` are 0-d or per channel
    (axis 1, 1-d). ``lo`` / ``hi`` are activation clamps (value units) not applied yet; ``grid`` is the
    ``(qmin, qmax)`` of a quantized tensor, None for a wide (accumulator-precision) one."""

    q: Tensor
    scale: Tensor
    zero: Tensor
    grid: tuple[int, int] | None = None
    lo: Tensor | None = None
    hi: Tensor | None = None

    def _bc(self, t: Tensor) -> Tensor:
        return t.reshape([1, -1] + [1] * (self.q.dim() - 2)) if t.dim() == 1 else t

    def value(self) -> Tensor:
        """The float64 values (clamps applied)."""
        v = (self.q - self._bc(self.zero)).to(torch.float64) * self._bc(self.scale)
        if self.lo is not None:
            v = torch.maximum(v, self._bc(self.lo))
        if self.hi is not None:
            v = torch.minimum(v, self._bc(self.hi))
        return v

    def materialized(self) -> IntTensor:
        """The same tensor with its pending clamps applied to the codes (floor / ceil at this tensor's precision)."""
        if self.lo is None and self.hi is None:
            return self
        s, z = self._bc(self.scale), self._bc(self.zero)
        q = self.q
        pos = s > 0
        for bound, is_lo in ((self.lo, True), (self.hi, False)):
            if bound is None:
                continue
            edge = self._bc(bound).to(torch.float64) / s + z  # the code where the value equals the bound
            # value >= lo  <=>  q >= ceil(edge) for s > 0, q <= floor(edge) for s < 0 (and mirrored for hi)
            upper = pos != is_lo
            code = torch.where(upper, torch.floor(edge), torch.ceil(edge)).to(torch.int64)
            q = torch.where(upper, torch.minimum(q, code), torch.maximum(q, code))
        return IntTensor(q, self.scale, self.zero, self.grid)


@dataclass
class FloatTensor:
    """A tensor the target holds in float32 (see the module docstring)."""

    v: Tensor


def _f32(x: IntTensor | FloatTensor) -> Tensor:
    # the float32 values a target computes from codes (dequantized accumulators, or s * (q - z)). A float layer reads
    # the value, so pending clamps (ReLU6) act on it in float, not on the codes: an accumulator's grid (a s_x s_w
    # under a BN kept in float) can be far coarser than the bound, and floor(6 / s) s may sit a code below 6
    if isinstance(x, FloatTensor):
        return x.v
    if x.grid is None:
        return x.value().to(torch.float32)
    v = (x.q - x._bc(x.zero)).to(torch.float32) * x._bc(x.scale).to(torch.float32)
    if x.lo is not None:
        v = torch.maximum(v, x._bc(x.lo).to(torch.float32))
    if x.hi is not None:
        v = torch.minimum(v, x._bc(x.hi).to(torch.float32))
    return v


@dataclass
class LayerStats:
    """Per weighted layer: the largest |accumulator| seen and how many saturated at int32."""

    max_abs_acc: int = 0
    overflows: int = 0
    bound: int = 0  # the static worst case sum |q_x - z_x| |q_w - z_w| + |b_int|


@dataclass
class _Weighted:
    kind: str  # conv | linear
    w: Tensor  # (q_w - z_w) as float64, exact integers
    w_scale: Tensor  # per output channel, float64
    bias: Tensor | None  # float bias added to the accumulator (converted to int32 per input scale)
    bn: tuple[Tensor, Tensor] | None  # academic strategy -1: (a, c) with bn(y) = a y + c per channel
    conv: dict[str, Any] = field(default_factory=dict)


class IntegerExecutor:
    """Integer-only execution of a prepared model (see the module docstring). ``requant`` / ``rounding`` are the
    profile's ``deploy`` settings. The model is copied; it must be calibrated (every quantizer enabled)."""

    def __init__(self, gm: fx.GraphModule, requant: str = "float32", rounding: str = "half_even",
                 float_between: bool = False) -> None:
        # float_between: graph 1 targets run everything but the weighted layers in float32
        self.requant, self.rounding, self.float_between = requant, rounding, float_between
        self.gm = convert_folded(copy.deepcopy(gm)).eval()
        self.weighted: dict[str, _Weighted] = {}
        self.stats: dict[str, LayerStats] = {}
        for node in self.gm.graph.nodes:
            if node.op == "call_module":
                m = self.gm.get_submodule(str(node.target))
                if isinstance(m, FakeQuantize):
                    _check_quantizer(m, node.name)
                elif isinstance(m, QuantConv2d | QuantLinear | QuantConvBn2d):
                    self.weighted[node.name] = _integer_weights(m, node.name)
                    self.stats[node.name] = LayerStats()

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        """Float32 logits of the integer model for a float input batch."""
        return self.run(x).value().to(torch.float32)

    @torch.no_grad()
    def run(self, x: Tensor, trace: dict[str, IntTensor] | None = None) -> IntTensor:
        """The output as an :class:`IntTensor` (accumulators and their per-class scale). ``trace``: filled with the
        codes every activation quantizer (and pooling re-quantizer) produced, by node name."""
        env: dict[fx.Node, Any] = {}
        out: Any = None
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                env[node] = x
            elif node.op == "output":
                out = env[node.args[0]]
            else:
                env[node] = self._node(node, env)
                if trace is not None and node.op == "call_module" and isinstance(
                        self.gm.get_submodule(str(node.target)), FakeQuantize | TiedRequant):
                    trace[node.name] = env[node]
        if not isinstance(out, IntTensor):
            raise NotExecutable("the model output is not an integer tensor (no quantized layer before it)")
        return out.materialized()

    # --- node handlers -------------------------------------------------------------------------------------------

    def _node(self, node: fx.Node, env: dict[fx.Node, Any]) -> Any:
        args = [env[a] if isinstance(a, fx.Node) else a for a in node.args]
        if node.op == "call_module":
            m = self.gm.get_submodule(str(node.target))
            if isinstance(m, FakeQuantize):
                return self._quantize(args[0], m)
            if isinstance(m, TiedRequant):
                return self._quantize(args[0], m.source, m)
            if node.name in self.weighted:
                return self._weighted(args[0], self.weighted[node.name], self.stats[node.name], node.name)
            if isinstance(m, nn.ReLU):
                return _clamp(args[0], 0.0, None, node)
            if isinstance(m, nn.ReLU6):
                return _clamp(args[0], 0.0, 6.0, node)
            if isinstance(m, nn.Hardtanh):
                return _clamp(args[0], m.min_val, m.max_val, node)
            if isinstance(m, ChannelClip):
                return _clamp(args[0], 0.0, m.upper.to(torch.float64), node)
            if isinstance(m, nn.AdaptiveAvgPool2d | nn.AvgPool2d):
                return _avgpool(args[0], m, node, self.float_between)
            if isinstance(m, nn.MaxPool2d):
                return _maxpool(args[0], node, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
            if isinstance(m, _PASS_MODULES):
                return _reshape(args[0], node, lambda t: m(t) if not isinstance(m, nn.Dropout) else t)
            raise NotExecutable(f"not integer-executable: layer {node.name} ({type(m).__name__})")
        if node.op == "call_function":
            t = node.target
            if t in _RELU_FUNCS:
                return _clamp(args[0], 0.0, None, node)
            if t is F.relu6:
                return _clamp(args[0], 0.0, 6.0, node)
            if t is F.hardtanh:
                lo, hi = node.kwargs.get("min_val", args[1] if len(args) > 1 else -1.0), node.kwargs.get(
                    "max_val", args[2] if len(args) > 2 else 1.0)
                return _clamp(args[0], float(lo), float(hi), node)
            if t in _ADD_FUNCS:
                return self._add(args[0], args[1], node)
            if t in _CAT_FUNCS:
                return self._cat(list(args[0]), node.kwargs.get("dim", args[1] if len(args) > 1 else 0), node)
            if t is F.adaptive_avg_pool2d:
                return _avgpool(args[0], nn.AdaptiveAvgPool2d(args[1]), node, self.float_between)
            if t in (torch.flatten, torch.reshape):
                rest, kw = args[1:], dict(node.kwargs)
                return _reshape(args[0], node, lambda q: t(q, *rest, **kw))
            if t is getattr:  # x.shape / x.size used for reshapes
                return getattr(args[0].q if isinstance(args[0], IntTensor) else args[0], args[1])
            if t is operator.getitem and not isinstance(args[0], IntTensor):
                return args[0][args[1]]
        if node.op == "call_method":
            if node.target == "relu":
                return _clamp(args[0], 0.0, None, node)
            if node.target == "size" and isinstance(args[0], IntTensor):
                return args[0].q.size(*args[1:])
            if node.target in _PASS_METHODS:
                rest, kw = args[1:], dict(node.kwargs)
                return _reshape(args[0], node, lambda q: getattr(q, str(node.target))(*rest, **kw))
        what = getattr(node.target, "__name__", node.target)
        raise NotExecutable(f"not integer-executable: node {node.name} ({node.op} {what})")

    def _quantize(self, x: Any, fq: FakeQuantize, tied: TiedRequant | None = None) -> IntTensor:
        qmin, qmax = fq.qrange
        rounding = fq.spec.rounding
        s = fq.scale.detach().to(torch.float64).reshape(-1)
        z = fq.zero_point.detach().to(torch.int64).reshape(-1)
        s, z = (s[0], z[0]) if s.numel() == 1 else (s, z)
        if isinstance(x, FloatTensor) or (isinstance(x, IntTensor) and x.grid is None and self.float_between):
            x = _f32(x)  # a float tensor of the target: quantized as the input is
        if isinstance(x, Tensor):  # the network input: the host quantizes it (the fake-quant formula, bit for bit)
            shape = [1, -1] + [1] * (x.dim() - 2)
            sf = fq.scale.detach().float().reshape(shape if s.dim() else [])
            zf = fq.zero_point.detach().reshape(shape if s.dim() else [])
            q = torch.clamp(round_float(x * sf.reciprocal(), rounding) + zf, qmin, qmax).to(torch.int64)
            return IntTensor(q, s, z, (qmin, qmax))
        lo_code, hi_code = _clamp_codes(x, s, z, qmin, qmax, rounding)
        mult = _bc(x.scale, x.q.dim()) / _bc(s, x.q.dim())
        mode = self.requant
        if tied is not None and x.grid is None and x.scale.dim() == 0:  # a pooled sum of N codes: 1 / N
            ratio = float(s / x.scale)
            if abs(ratio - round(ratio)) < 1e-6:
                mode = tied.mode(int(round(ratio)))
        q = requantize(x.q - _bc(x.zero, x.q.dim()), mult, mode, self.rounding) + _bc(z, x.q.dim())
        q = torch.minimum(torch.maximum(q, lo_code), hi_code)
        return IntTensor(q, s, z, (qmin, qmax))

    def _weighted(self, x: Any, w: _Weighted, st: LayerStats, name: str) -> IntTensor:
        if not isinstance(x, IntTensor) or x.grid is None or x.scale.dim() != 0:
            raise NotExecutable(f"not integer-executable: the input of {name} is not a per-tensor quantized tensor")
        x = x.materialized()
        xi = (x.q - x.zero).to(torch.float64)
        if w.kind == "conv":
            acc = F.conv2d(xi, w.w, None, **w.conv)
        else:
            acc = F.linear(xi, w.w)
        acc_scale = x.scale * w.w_scale  # s_x s_w per output channel
        # static worst case: sum |q_x - z_x| |q_w - z_w| over one output's inputs (+ bias), the int32 budget
        qmin, qmax = x.grid
        xmax = max(abs(qmin - int(x.zero)), abs(qmax - int(x.zero)))
        bound = int(w.w.abs().flatten(1).sum(1).max().item()) * xmax
        b_int = None
        if w.bias is not None:
            b_int = torch.round(w.bias.to(torch.float64) / acc_scale)
            acc = acc + _bc(b_int, acc.dim())
            bound += int(b_int.abs().max().item())
        st.bound = max(st.bound, bound)
        over = acc.abs() > INT32_MAX
        st.overflows += int(over.sum().item())
        st.max_abs_acc = max(st.max_abs_acc, int(acc.abs().max().item()) if acc.numel() else 0)
        q = acc.clamp(-INT32_MAX - 1, INT32_MAX).to(torch.int64)  # int32 saturation
        zero = torch.zeros_like(acc_scale, dtype=torch.int64)
        if w.bn is None:
            return IntTensor(q, acc_scale, zero)
        a, c = w.bn  # value = a (acc s) + c = (acc + c / (a s)) (a s): an int32 bias at the rescaled grid
        new_scale = acc_scale * a
        q = q + _bc(torch.round(c / new_scale).to(torch.int64), q.dim())
        return IntTensor(q, new_scale, zero)

    def _add(self, a: Any, b: Any, node: fx.Node) -> IntTensor | FloatTensor:
        if not all(isinstance(t, IntTensor | FloatTensor) for t in (a, b)):
            raise NotExecutable(f"not integer-executable: add {node.name} has an input outside the integer graph")
        if any(isinstance(t, FloatTensor) or t.grid is None for t in (a, b)):
            return FloatTensor(_f32(a) + _f32(b))  # a dequantized accumulator: the fp32 epilogue / float layers
        a, b = a.materialized(), b.materialized()
        # the common grid: 2^19 times finer than a quantized input (TFLite: 2 s_max / 2^20), an accumulator's own
        # (already fine) scale for a wide input; the coarsest of these keeps the sum within int32
        s = max(float(t.scale.abs().max()) * (2.0 / 2.0**ADD_SHIFT if t.grid is not None else 1.0) for t in (a, b))
        target = torch.tensor(s, dtype=torch.float64)
        qa, qb = (requantize(t.q - _bc(t.zero, t.q.dim()), _bc(t.scale, t.q.dim()) / target, self.requant,
                             self.rounding) for t in (a, b))
        return IntTensor(self._saturate(qa + qb, node.name), target, torch.tensor(0, dtype=torch.int64))

    def _saturate(self, q: Tensor, name: str) -> Tensor:
        over = int((q.abs() > INT32_MAX).sum().item())
        if over:
            self.stats.setdefault(name, LayerStats()).overflows += over
        return q.clamp(-INT32_MAX - 1, INT32_MAX)

    def _cat(self, parts: list[Any], dim: int, node: fx.Node) -> IntTensor | FloatTensor:
        if not all(isinstance(p, IntTensor | FloatTensor) for p in parts):
            raise NotExecutable(f"not integer-executable: cat {node.name} has an input outside the integer graph")
        if any(isinstance(p, FloatTensor) or (p.grid is None and self.float_between) for p in parts):
            return FloatTensor(torch.cat([_f32(p) for p in parts], dim))
        parts = [p.materialized() for p in parts]
        same = all(p.scale.dim() == 0 and torch.equal(p.scale, parts[0].scale) and torch.equal(p.zero, parts[0].zero)
                   for p in parts)
        if same:
            return IntTensor(torch.cat([p.q for p in parts], dim), parts[0].scale, parts[0].zero, parts[0].grid)
        if dim == 1 or any(p.scale.dim() for p in parts):
            raise NotExecutable(f"not integer-executable: cat {node.name} joins tensors on different grids")
        s = min(float(p.scale) for p in parts) / 2.0**ADD_SHIFT
        target = torch.tensor(s, dtype=torch.float64)
        qs = [requantize(p.q - p.zero, p.scale / target, self.requant, self.rounding) for p in parts]
        return IntTensor(torch.cat(qs, dim), target, torch.tensor(0, dtype=torch.int64))


# --- helpers ------------------------------------------------------------------------------------------------------


def _bc(t: Tensor, ndim: int) -> Tensor:
    return t.reshape([1, -1] + [1] * (ndim - 2)) if t.dim() == 1 else t


def _check_quantizer(fq: FakeQuantize, name: str) -> None:
    if not fq.active or not fq.calibrated:
        state = "not calibrated" if not fq.calibrated else "off (16/32 bit, quant.bypass or quant.only)"
        raise NotExecutable(f"not integer-executable: quantizer {name} is {state}")


def _clamp(x: Any, lo: float | Tensor | None, hi: float | Tensor | None, node: fx.Node) -> IntTensor | FloatTensor:
    if isinstance(x, FloatTensor):
        v = x.v
        shape = [1, -1] + [1] * (v.dim() - 2)
        if lo is not None:
            lo_t = torch.as_tensor(lo, dtype=torch.float32)
            v = torch.maximum(v, lo_t.reshape(shape) if lo_t.dim() else lo_t)
        if hi is not None:
            hi_t = torch.as_tensor(hi, dtype=torch.float32)
            v = torch.minimum(v, hi_t.reshape(shape) if hi_t.dim() else hi_t)
        return FloatTensor(v)
    if not isinstance(x, IntTensor):
        raise NotExecutable(f"not integer-executable: activation {node.name} on a float tensor")

    def t(v: float | Tensor | None) -> Tensor | None:
        return None if v is None else torch.as_tensor(v, dtype=torch.float64)

    lo_t, hi_t = t(lo), t(hi)
    new_lo = lo_t if x.lo is None else (x.lo if lo_t is None else torch.maximum(x.lo, lo_t))
    new_hi = hi_t if x.hi is None else (x.hi if hi_t is None else torch.minimum(x.hi, hi_t))
    return IntTensor(x.q, x.scale, x.zero, x.grid, new_lo, new_hi)


def _clamp_codes(x: IntTensor, s: Tensor, z: Tensor, qmin: int, qmax: int, rounding: str) -> tuple[Tensor, Tensor]:
    """The output-grid codes of the pending clamps (quantized with the fake-quant rounding: exact by monotonicity)."""
    nd = x.q.dim()
    lo = torch.full((), qmin, dtype=torch.int64)
    hi = torch.full((), qmax, dtype=torch.int64)
    sf, zf = _bc(s, nd).float(), _bc(z, nd)
    if x.lo is not None:
        lo = torch.clamp(round_float(_bc(x.lo, nd).float() * sf.reciprocal(), rounding) + zf, qmin, qmax)
        lo = lo.to(torch.int64)
    if x.hi is not None:
        hi = torch.clamp(round_float(_bc(x.hi, nd).float() * sf.reciprocal(), rounding) + zf, qmin, qmax)
        hi = hi.to(torch.int64)
    return lo, hi


def _integer_weights(m: nn.Module, name: str) -> _Weighted:
    fq = m.weight_fq
    if isinstance(m, QuantConvBn2d):  # strategy -1 (the others were folded by convert_folded)
        w, b = m.conv.weight.detach(), m.conv.bias
        bn = m.bn
        assert bn is not None
        sigma = torch.sqrt(bn.running_var.to(torch.float64) + bn.eps)
        gamma = bn.weight.detach().to(torch.float64) if bn.weight is not None else torch.ones_like(sigma)
        beta = bn.bias.detach().to(torch.float64) if bn.bias is not None else torch.zeros_like(sigma)
        a = gamma / sigma
        b0 = b.detach().to(torch.float64) if b is not None else torch.zeros_like(sigma)
        bn_ac: tuple[Tensor, Tensor] | None = (a, beta + (b0 - bn.running_mean.to(torch.float64)) * a)
        bias = None
        conv = m.conv
    else:
        w, bias = m.folded_weight_bias()
        w = w.detach()
        bias = None if bias is None else bias.detach()
        bn_ac = None
        conv = m.conv if isinstance(m, QuantConv2d) else None
    if not isinstance(fq, FakeQuantize) or not fq.active:
        raise NotExecutable(f"not integer-executable: the weights of {name} are not quantized")
    if getattr(fq, "in_scale", None) is not None:
        raise NotExecutable(f"not integer-executable: {name} has IOSO input-channel factors (shift-and-add "
                            "groups are not modelled by the executor)")
    wq = fq(w).detach().to(torch.float64)  # the weight the fake-quant model computes with
    out = w.shape[0]
    scale = fq.scale.detach().to(torch.float64).reshape(-1).expand(out) if fq.scale.numel() in (1, out) else None
    if scale is None:
        raise NotExecutable(f"not integer-executable: {name} has a weight scale of {fq.scale.numel()} values")
    zero = fq.zero_point.detach().to(torch.float64).reshape(-1).expand(out)
    shape = [-1] + [1] * (w.dim() - 1)
    codes = torch.round(wq / scale.reshape(shape)) + zero.reshape(shape)
    qmin, qmax = fq.qrange
    back = (codes - zero.reshape(shape)) * scale.reshape(shape)
    if bool((codes < qmin).any() or (codes > qmax).any()) or not torch.allclose(back, wq, rtol=1e-5, atol=1e-7):
        raise NotExecutable(f"not integer-executable: the quantized weights of {name} ({type(fq).__name__}) are not "
                            "on the uniform grid of their scale / zero point")
    kw: dict[str, Any] = {}
    if conv is not None:
        if conv.padding_mode != "zeros":
            raise NotExecutable(f"not integer-executable: {name} pads with {conv.padding_mode!r}")
        kw = {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation, "groups": conv.groups}
    return _Weighted("conv" if conv is not None else "linear", codes - zero.reshape(shape), scale.clone(), bias,
                     bn_ac, kw)


def _avgpool(x: Any, m: nn.Module, node: fx.Node, float_between: bool = False) -> IntTensor | FloatTensor:
    if isinstance(x, FloatTensor) or (isinstance(x, IntTensor) and x.grid is None and float_between):
        return FloatTensor(m(_f32(x)))
    if not isinstance(x, IntTensor) or x.q.dim() != 4:
        raise NotExecutable(f"not integer-executable: pooling {node.name} on a float tensor")
    x = x.materialized()
    h, w = x.q.shape[-2:]
    if isinstance(m, nn.AdaptiveAvgPool2d):
        oh, ow = (m.output_size, m.output_size) if isinstance(m.output_size, int) else m.output_size
        oh, ow = oh or h, ow or w
        if h % oh or w % ow:
            raise NotExecutable(f"not integer-executable: {node.name} pools {h}x{w} to {oh}x{ow} (uneven windows)")
        k, stride, pad = (h // oh, w // ow), (h // oh, w // ow), 0
    else:
        k, stride, pad = m.kernel_size, m.stride, m.padding
        if pad not in (0, (0, 0)) or getattr(m, "ceil_mode", False):
            raise NotExecutable(f"not integer-executable: {node.name} averages padded windows")
    kh, kw = (k, k) if isinstance(k, int) else k
    centred = (x.q - _bc(x.zero, 4)).to(torch.float64)
    sums = F.avg_pool2d(centred, k, stride, pad, divisor_override=1).to(torch.int64)  # exact integer sums
    n = kh * kw
    if x.grid is not None:  # codes of a quantized tensor: the sum is exact at scale s / N
        return IntTensor(sums, x.scale / n, torch.zeros_like(x.zero))
    # an accumulator-precision tensor: divide by N with rounding, keeping int32 (its scale is already fine)
    avg = torch.round(sums.to(torch.float64) / n).to(torch.int64)  # exact: |sums| < 2^53
    return IntTensor(avg, x.scale, torch.zeros_like(x.zero))


def _maxpool(x: Any, node: fx.Node, *pool: Any) -> IntTensor | FloatTensor:
    if isinstance(x, FloatTensor):
        return FloatTensor(F.max_pool2d(x.v, *pool))
    if not isinstance(x, IntTensor):
        raise NotExecutable(f"not integer-executable: max pooling {node.name} on a float tensor")
    x = x.materialized()
    sign = torch.sign(_bc(x.scale, x.q.dim())).to(torch.float64)  # a negative scale orders codes backwards
    q = F.max_pool2d(x.q.to(torch.float64) * sign, *pool) * sign
    return IntTensor(q.to(torch.int64), x.scale, x.zero, x.grid)


def _reshape(x: Any, node: fx.Node, fn: Any) -> IntTensor | FloatTensor:
    if isinstance(x, FloatTensor):
        return FloatTensor(fn(x.v))
    if not isinstance(x, IntTensor):
        raise NotExecutable(f"not integer-executable: {node.name} on a float tensor")
    per_channel = x.scale.dim() == 1 or x.zero.dim() == 1 or (x.lo is not None and x.lo.dim() == 1) or (
        x.hi is not None and x.hi.dim() == 1)
    q = fn(x.q)
    if not per_channel or (q.dim() >= 2 and q.shape[1] == x.q.shape[1] and math.prod(x.q.shape[2:]) == 1):
        return IntTensor(q, x.scale, x.zero, x.grid, x.lo, x.hi)
    n, c = x.q.shape[:2]
    spatial = math.prod(x.q.shape[2:])
    if q.dim() == 2 and q.shape == (n, c * spatial):  # flatten(1) of NCHW: each channel's values stay together

        def expand(t: Tensor | None) -> Tensor | None:
            return t if t is None or t.dim() == 0 else t.repeat_interleave(spatial)

        return IntTensor(q, expand(x.scale), expand(x.zero), x.grid, expand(x.lo), expand(x.hi))  # type: ignore[arg-type]
    raise NotExecutable(f"not integer-executable: {node.name} reshapes a per-channel tensor")
