"""Quantizer insertion on the ``torch.fx`` graph: BN folding, weight quantizers, activation quantizers per graph.

``prepare(model, profile, ...)`` traces a copy of the FP32 model and returns a :class:`torch.fx.GraphModule` where

- each ``Conv2d -> BatchNorm2d`` pair became one :class:`QuantConvBn2d` with the profile's BN-folding strategy,
  other convs :class:`QuantConv2d`, linears :class:`QuantLinear`, each with a weight quantizer;
- activation quantizers (:class:`FakeQuantize` call_module nodes named ``act_fq_<tensor>``) sit on the tensors the
  profile's block graph quantizes (MQBench Fig. 4, App. G; white paper Sec. 2.3):

  graph 1 (academic, ACL): the inputs of conv/linear layers only, on those edges alone (a residual shortcut that
  reads the same tensor stays in float);
  graph 2 (TensorRT): every tensor read by a conv/linear, for all its readers (the deployed tensor is int8);
  each residual add: its inputs quantized except the main-branch conv output, which the add is fused with;
  average pooling: its input quantized and its output re-quantized with the input's parameters, as the target
  does it: the integer sum of the window's codes requantized by ``1 / N`` (:class:`TiedRequant`);
  graph 3 (FBGEMM, TVM, SNPE): as 2, with every add input quantized.
  Concatenated branches share one quantizer (graphs 2 and 3), and the concatenation, already on that grid, gets
  none of its own. Max pooling, flatten and ReLU keep a quantized tensor on its grid, so nothing is re-quantized
  after them. The first and last weighted layers (weights and input) use ``first_last_bits``.

Every weighted layer is given the quantizer of its input (``set_input_quantizer``), so that its bias is the integer
the target adds to the accumulator: ``round(b / (s_x s_w))`` on the grid ``s_x s_w`` (``bench.quant.qmodules``).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn

from bench.models.graph import node_module, set_submodule, trace
from bench.quant.clip import ChannelClip
from bench.quant.fake import fake_quantize
from bench.quant.fixedpoint import requantize
from bench.quant.observers import build_observer
from bench.quant.profiles import HardwareProfile
from bench.quant.qmodules import QuantConv2d, QuantConvBn2d, QuantLinear
from bench.quant.quantizer import FakeQuantize
from bench.quant.spec import QuantSpec

WEIGHTED = (QuantConv2d, QuantConvBn2d, QuantLinear)
# A quantizer factory: (spec, kind "weight" | "act", observer name) -> module. QAT algorithms pass their own.
QuantizerFactory = Callable[[QuantSpec, str, str], FakeQuantize]

_ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.GELU, nn.LeakyReLU, ChannelClip)
_ACT_FUNCS = {torch.relu, nn.functional.relu, nn.functional.relu6, nn.functional.hardtanh, nn.functional.silu}
_ADD_FUNCS = {operator.add, torch.add, operator.iadd}
_CAT_FUNCS = {torch.cat, torch.concat}
_PASS_MODULES = (nn.Flatten, nn.Dropout, nn.Identity)
_PASS_FUNCS = {torch.flatten, torch.reshape}
_PASS_METHODS = {"flatten", "view", "reshape", "contiguous", "squeeze", "unsqueeze"}
_AVGPOOL_MODULES = (nn.AdaptiveAvgPool2d, nn.AvgPool2d)
_AVGPOOL_FUNCS = {nn.functional.adaptive_avg_pool2d, nn.functional.avg_pool2d}
_MAXPOOL_MODULES = (nn.MaxPool2d, nn.AdaptiveMaxPool2d)
_MAXPOOL_FUNCS = {nn.functional.max_pool2d, nn.functional.adaptive_max_pool2d}


def default_factory(spec: QuantSpec, kind: str, observer: str) -> FakeQuantize:
    """Calibrated fake quantizer with the named observer (``calib.weight`` / ``calib.act``)."""
    return FakeQuantize(spec, kind, build_observer(observer, spec))


class TiedRequant(nn.Module):
    """Re-quantizes an average pooling's output with its input quantizer's parameters (App. G), as the integer
    target computes it: the pooled value times ``N / s`` is the integer sum of the window's centred codes, which is
    requantized by ``1 / N`` with the target's arithmetic (``requant``, the spec's rounding,
    ``bench.quant.fixedpoint``).
    Rounding the float average instead would resolve the frequent exact half-way sums (``N`` even) by float noise.
    ``window`` is ``N`` (None: the ratio of the input's to the output's spatial size, for adaptive pooling).
    Gradient: straight through, zero where clamped."""

    def __init__(self, source: FakeQuantize, window: int | None = None, requant: str = "float32") -> None:
        super().__init__()
        self.source_name = ""  # filled by prepare, for reports
        self._source = [source]  # a list: not a submodule, so the source is not registered (or saved) twice
        self.window = window
        self.requant = requant

    @property
    def source(self) -> FakeQuantize:
        """The quantizer whose scale and zero point are reused."""
        return self._source[0]

    def mode(self, n: int) -> str:
        """The requantization arithmetic of a sum over ``n`` codes: the profile's, except that a shift target
        divides by a window that is not a power of two in fp32 (a shift cannot express ``1 / N``)."""
        return "float32" if self.requant == "shift" and n & (n - 1) else self.requant

    def _n(self, x: torch.Tensor, pool_input: torch.Tensor | None) -> int | None:
        if self.window is not None:
            return self.window
        if pool_input is None or x.dim() != 4 or pool_input.dim() != 4:
            return None
        (h, w), (oh, ow) = pool_input.shape[-2:], x.shape[-2:]
        return (h // oh) * (w // ow) if h % oh == 0 and w % ow == 0 else None

    def forward(self, x: torch.Tensor, pool_input: torch.Tensor | None = None) -> torch.Tensor:
        src = self.source
        if src.observing or not src.active:
            return x
        qmin, qmax = src.qrange
        n = self._n(x, pool_input)
        if n is None or n <= 1 or src.ch_axis is not None:
            return fake_quantize(x, src.scale, src.zero_point, qmin, qmax, src.ch_axis, src.spec.rounding)
        s, z = src.grid()
        s, z = s.reshape(()).float(), z.reshape(()).float()
        sums = torch.round(x.detach() * s.reciprocal() * n)  # exact: the pooled value is s * sum / N
        mult = torch.tensor(1.0 / n, dtype=torch.float64, device=x.device)  # on the input's device: CUDA too
        q = requantize(sums, mult, self.mode(n), src.spec.rounding)
        q = q.to(x.dtype) + z
        out = (q.clamp(qmin, qmax) - z) * s
        if not x.requires_grad:
            return out
        return torch.where((q >= qmin) & (q <= qmax), x + (out - x).detach(), out.detach())


@dataclass
class QuantPlan:
    """Which tensors get activation quantizers: groups of fx nodes sharing one quantizer."""

    groups: list[list[fx.Node]] = field(default_factory=list)
    bits: list[int] = field(default_factory=list)
    # tensor node -> the reader nodes whose edge reads the quantized tensor (None = every reader)
    readers: dict[fx.Node, set[fx.Node] | None] = field(default_factory=dict)
    requant: list[tuple[fx.Node, fx.Node]] = field(default_factory=list)  # (avg-pool node, its input tensor)


def node_kind(gm: fx.GraphModule, node: fx.Node) -> str:
    """Category of a node for the placement rules."""
    m = node_module(gm, node)
    if node.op == "placeholder":
        return "input"
    if node.op == "output":
        return "output"
    if m is not None:
        if isinstance(m, WEIGHTED):
            return "weighted"
        if isinstance(m, nn.ReLU):
            return "relu"
        if isinstance(m, _ACT_MODULES):
            return "act"
        if isinstance(m, _AVGPOOL_MODULES):
            return "avgpool"
        if isinstance(m, _MAXPOOL_MODULES):
            return "maxpool"
        if isinstance(m, _PASS_MODULES):
            return "pass"
        return "other"
    if node.op == "call_function":
        if node.target in (torch.relu, nn.functional.relu):
            return "relu"
        if node.target in _ACT_FUNCS:
            return "act"
        if node.target in _ADD_FUNCS:
            return "add"
        if node.target in _CAT_FUNCS:
            return "cat"
        if node.target in _AVGPOOL_FUNCS:
            return "avgpool"
        if node.target in _MAXPOOL_FUNCS:
            return "maxpool"
        if node.target in _PASS_FUNCS:
            return "pass"
    if node.op == "call_method" and node.target in _PASS_METHODS:
        return "pass"
    if node.op == "call_method" and node.target == "relu":
        return "relu"
    return "other"


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    args = node.args[0] if node.target in _CAT_FUNCS else node.args
    return [a for a in args if isinstance(a, fx.Node)]


def _replace_weighted(
    gm: fx.GraphModule, profile: HardwareProfile, w_bits: int, first_last_bits: int | None, calib_weight: str,
    factory: QuantizerFactory,
) -> list[fx.Node]:
    """Swap conv(+BN)/linear modules for quantized ones; returns the weighted nodes in graph order."""
    nodes = [n for n in gm.graph.nodes if isinstance(node_module(gm, n), nn.Conv2d | nn.Linear)]
    for i, node in enumerate(nodes):
        m = node_module(gm, node)
        edge = i in (0, len(nodes) - 1) and first_last_bits is not None
        spec = profile.weight_spec(first_last_bits if edge else w_bits)
        wfq = factory(spec, "weight", calib_weight)
        users = list(node.users)
        if isinstance(m, nn.Linear):
            new: nn.Module = QuantLinear(m, wfq)
        elif len(users) == 1 and isinstance(node_module(gm, users[0]), nn.BatchNorm2d):
            bn_node = users[0]
            new = QuantConvBn2d(m, node_module(gm, bn_node), profile.bn_fold, wfq)
            bn_node.replace_all_uses_with(node)
            gm.graph.erase_node(bn_node)
            # the BN now lives inside the fused module; drop its old path (named_modules dedups shared modules,
            # so delete_all_unused_submodules would not see it)
            gm.delete_submodule(str(bn_node.target))
        else:
            new = QuantConv2d(m, wfq)
        set_submodule(gm, str(node.target), new)
    return nodes


def plan(gm: fx.GraphModule, graph: int, a_bits: int, first_last_bits: int | None) -> QuantPlan:
    """Decide the activation quantizers of a graph whose weighted modules were already swapped."""
    nodes = list(gm.graph.nodes)
    kinds = {n: node_kind(gm, n) for n in nodes}
    weighted = [n for n in nodes if kinds[n] == "weighted"]
    edge_layers = {weighted[0], weighted[-1]} if weighted and first_last_bits is not None else set()
    want: dict[fx.Node, int] = {}  # tensor -> bits
    readers: dict[fx.Node, set[fx.Node] | None] = {}
    union: dict[fx.Node, fx.Node] = {}  # union-find for concat sharing
    requant: list[tuple[fx.Node, fx.Node]] = []

    def find(n: fx.Node) -> fx.Node:
        while union.get(n, n) is not n:
            n = union[n]
        return n

    def add(t: fx.Node, bits: int, reader: fx.Node | None) -> None:
        want[t] = max(want.get(t, 0), bits)
        if graph == 1:
            cur = readers.get(t) or set()
            readers[t] = cur | ({reader} if reader is not None else set())
        else:
            readers[t] = None

    for n in nodes:
        k = kinds[n]
        if k == "weighted":
            bits = first_last_bits if n in edge_layers else a_bits
            add(n.args[0], int(bits), n)
        elif graph == 1:
            continue
        elif k == "add":
            ins = _tensor_args(n)
            fused = next((a for a in ins if kinds[a] == "weighted"), None) if graph == 2 else None
            for a in ins:
                if a is not fused:
                    add(a, a_bits, n)
        elif k == "cat":
            ins = _tensor_args(n)
            for a in ins:
                add(a, a_bits, n)
                union[find(a)] = find(ins[0])
        elif k == "avgpool":
            add(n.args[0], a_bits, n)
            requant.append((n, n.args[0]))

    if graph != 1:
        # tensors already on a grid need no quantizer of their own: re-quantized pooling outputs, and max-pool /
        # flatten / ReLU of a quantized tensor (every reader of a quantized tensor sees it quantized here)
        pools = {pool for pool, _ in requant}
        on_grid: set[fx.Node] = set()
        for n in nodes:
            derived = kinds[n] in ("maxpool", "pass", "relu") and bool(n.args) and n.args[0] in on_grid
            if kinds[n] == "cat":  # all inputs share one quantizer: the concatenation is on that grid already
                ins = _tensor_args(n)
                derived = bool(ins) and all(a in on_grid for a in ins) and len({find(a) for a in ins}) == 1
            if n in pools or derived:
                want.pop(n, None)
                on_grid.add(n)
            elif n in want:
                on_grid.add(n)

    roots: dict[fx.Node, list[fx.Node]] = {}
    for t in [n for n in nodes if n in want]:
        roots.setdefault(find(t), []).append(t)
    p = QuantPlan(requant=requant, readers={t: readers[t] for t in want})
    for members in roots.values():
        p.groups.append(members)
        p.bits.append(max(want[t] for t in members))
    return p


def prepare(
    model: nn.Module,
    profile: HardwareProfile,
    *,
    w_bits: int,
    a_bits: int,
    calib_weight: str = "minmax",
    calib_act: str = "minmax",
    first_last_bits: int | None = 8,
    factory: QuantizerFactory = default_factory,
) -> fx.GraphModule:
    """A quantized copy of ``model`` for ``profile`` (see the module docstring); ``model`` is not changed.

    Quantizers start uncalibrated: run ``bench.quant.calibrate`` (or a QAT initialisation) before evaluating.
    """
    gm = trace(copy.deepcopy(model))
    _replace_weighted(gm, profile, w_bits, first_last_bits, calib_weight, factory)
    gm.graph.lint()
    p = plan(gm, profile.graph, a_bits, first_last_bits)
    made: dict[fx.Node, FakeQuantize] = {}
    names: dict[fx.Node, str] = {}
    for members, bits in zip(p.groups, p.bits, strict=True):
        fq = factory(profile.act_spec(bits), "act", calib_act)
        name = f"act_fq_{members[0].name}"
        gm.add_submodule(name, fq)
        _attach_bn(gm, members[0], fq)
        for t in members:
            made[t], names[t] = fq, name
            with gm.graph.inserting_after(t):
                q = gm.graph.call_module(name, (t,))
            readers = p.readers[t]
            for user in list(t.users):
                if user is q or (readers is not None and user not in readers):
                    continue
                user.replace_input_with(t, q)
    for pool, src in p.requant:
        fq = made.get(src) or _quantizer_of(gm, src)
        if fq is None:
            continue
        tied = TiedRequant(fq, _pool_window(gm, pool), profile.requant)
        tied.source_name = names.get(src, "")
        name = f"requant_{pool.name}"
        gm.add_submodule(name, tied)
        with gm.graph.inserting_after(pool):
            q = gm.graph.call_module(name, (pool, pool.args[0]))
        for user in list(pool.users):
            if user is not q:
                user.replace_input_with(pool, q)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    _link_inputs(gm)
    gm.train(model.training)
    return gm


def _pool_window(gm: fx.GraphModule, pool: fx.Node) -> int | None:
    # N of an average pooling with a fixed window (AvgPool2d without padding); None: inferred from the shapes
    m = node_module(gm, pool)
    if isinstance(m, nn.AvgPool2d) and m.padding in (0, (0, 0)) and not m.ceil_mode:
        k = m.kernel_size
        kh, kw = (k, k) if isinstance(k, int) else k
        return int(m.divisor_override or kh * kw)
    return None


def _quantizer_of(gm: fx.GraphModule, node: fx.Node) -> FakeQuantize | None:
    # the quantizer an on-grid tensor came from (through max-pool / flatten / ReLU / a shared-grid concatenation)
    while isinstance(node, fx.Node):
        m = node_module(gm, node)
        if isinstance(m, FakeQuantize):
            return m
        if isinstance(m, TiedRequant):
            return m.source
        if not node.args:
            return None
        node = _tensor_args(node)[0] if node_kind(gm, node) == "cat" else node.args[0]
    return None


def _link_inputs(gm: fx.GraphModule) -> None:
    """Give every weighted layer the quantizer of its input (for its integer bias); None where it reads a float."""
    for node in gm.graph.nodes:
        m = node_module(gm, node)
        if isinstance(m, WEIGHTED) and node.args and isinstance(node.args[0], fx.Node):
            m.set_input_quantizer(_quantizer_of(gm, node.args[0]) if _on_grid_chain(gm, node.args[0]) else None)


def _on_grid_chain(gm: fx.GraphModule, node: fx.Node) -> bool:
    # the tensor comes from a quantizer through ops that keep it on its grid (max-pool, flatten, ReLU, concat)
    while isinstance(node, fx.Node):
        m = node_module(gm, node)
        if isinstance(m, FakeQuantize | TiedRequant):
            return True
        if node_kind(gm, node) not in ("maxpool", "pass", "relu", "cat") or not node.args:
            return False
        node = _tensor_args(node)[0] if node_kind(gm, node) == "cat" else node.args[0]
    return False


def _attach_bn(gm: fx.GraphModule, tensor: fx.Node, fq: FakeQuantize) -> None:
    """Give a BN-based observer the BN (and ReLU) that produce ``tensor``, when there is one."""
    obs = fq.observer
    if obs is None or not hasattr(obs, "set_bn"):
        return
    relu_max: float | None = None
    relu = False
    node = tensor
    kind = node_kind(gm, node)
    if kind in ("relu", "act"):
        m = node_module(gm, node)
        if kind == "act" and not isinstance(m, nn.ReLU6 | nn.Hardtanh):
            return  # the range of other activations does not follow from BN's
        relu = True
        relu_max = 6.0 if isinstance(m, nn.ReLU6) else None
        node = node.args[0]
    m = node_module(gm, node)
    if isinstance(m, QuantConvBn2d) and m.bn is not None and m.strategy != 0:
        bn = m.bn
        gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(bn.running_mean)
        beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(bn.running_mean)
        fq.configure_observer(lambda o: o.set_bn(gamma, beta, relu, relu_max))


def quantizers(gm: nn.Module) -> list[tuple[str, FakeQuantize]]:
    """All fake quantizers of a prepared model (weights and activations), in module order."""
    return [(n, m) for n, m in gm.named_modules() if isinstance(m, FakeQuantize)]


def weighted_modules(gm: nn.Module) -> list[tuple[str, nn.Module]]:
    """All quantized conv/linear modules of a prepared model."""
    return [(n, m) for n, m in gm.named_modules() if isinstance(m, WEIGHTED)]


def convert_folded(gm: fx.GraphModule) -> fx.GraphModule:
    """The deployment form of a prepared model: every conv+BN module with a folding strategy 0..4 replaced by its
    folded conv (running statistics in the weights), in place. Eval-mode outputs are unchanged; strategy -1 keeps
    its float BN (the academic setting is not foldable by definition)."""
    for name, m in list(gm.named_modules()):
        if isinstance(m, QuantConvBn2d) and m.strategy != -1:
            set_submodule(gm, name, m.to_folded())
    gm.recompile()
    return gm
