"""Cross-layer equalization with BN folding and high-bias absorption (Nagel et al. 2019; white paper Sec. 3.2).

``equalize(model)`` returns an equalised copy of a float model as a ``torch.fx.GraphModule``:

1. every ``Conv2d -> BatchNorm2d`` pair is folded into a :class:`FoldedConv2d` (MQBench Eq. 4 with the running
   statistics), which remembers the BN's ``beta`` / ``gamma``: the folded output of channel ``i`` is taken to be
   ``N(beta_i, gamma_i^2)`` (what BN normalises it to), the input of high-bias absorption and analytic bias correction;
2. chains of weighted layers joined by ReLU, ReLU6 (or any ``Hardtanh(0, u)``) or nothing, each tensor on the way
   read by the next layer only, are equalised: pairs ``A -> B`` with ``s_i = sqrt(r1_i / r2_i)``, depthwise triples
   ``A -> dw -> C`` in closed form (all three ranges become ``cbrt(r1 r2 r3)``), longer chains by sweeping over their
   pairs / triples until the scales are 1. A chain never crosses an add or a concat (the skip connection would need
   the same scaling on the other branch, white paper Sec. 3.2), nor another activation (SiLU etc. are not positively
   homogeneous). A ReLU6 between equalised layers becomes a :class:`ChannelClip` whose bounds are scaled with the
   channels; a global average pool (and flatten / dropout) between the last activation and a linear layer commutes
   with per-channel scaling and does not end a chain;
3. high biases are absorbed through ReLU / ChannelClip into the next layer: ``c = max(0, beta - 3 gamma)``; by
   default not into a layer with zero padding (wrong at every border pixel, which on the 32 px minis is most of
   them; see ``_absorb``).

The returned model computes the same function as the input (float rounding aside) without absorption; absorption
is exact only where the pre-activation stays above ``c``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from bench.models.graph import node_module, set_submodule, trace
from bench.quant.clip import ChannelClip
from bench.quant.qmodules import fold_conv_bn_weights

__all__ = ["ChannelClip", "FoldedConv2d", "equalize"]

# sweeps over a chain stop once every scale is within this of 1 (log domain)
_CONVERGED = 1e-7


class FoldedConv2d(nn.Conv2d):
    """A Conv2d with a BatchNorm2d folded in, carrying the BN's ``beta`` / ``gamma`` as buffers ``bn_beta`` /
    ``bn_gamma`` in units of the folded output (``gamma`` keeps its sign; the standard deviation is ``|gamma|``).

    CLE scales them with the output channels and absorption shifts ``bn_beta``, so they keep describing the
    pre-activation distribution ``N(bn_beta, bn_gamma^2)``. It is an ``nn.Conv2d`` and a leaf for fx (``fx_leaf``,
    see ``bench.models.graph.trace``), so ``bench.quant.insert.prepare`` quantizes it as a plain conv.
    """

    fx_leaf = True
    bn_beta: Tensor
    bn_gamma: Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: Any = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups,
            bias=True, padding_mode=padding_mode, device=device, dtype=dtype,
        )
        self.register_buffer("bn_beta", torch.zeros(out_channels, device=device, dtype=dtype))
        self.register_buffer("bn_gamma", torch.ones(out_channels, device=device, dtype=dtype))

    @classmethod
    @torch.no_grad()
    def from_conv_bn(cls, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> FoldedConv2d:
        """``conv`` followed by ``bn`` (running statistics) as one conv with bias (copies, not shared)."""
        assert bn.running_mean is not None and bn.running_var is not None
        new = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
            dilation=conv.dilation, groups=conv.groups, padding_mode=conv.padding_mode,
            device=conv.weight.device, dtype=conv.weight.dtype,
        )
        w, b = fold_conv_bn_weights(
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps
        )
        new.weight.copy_(w)
        new.bias.copy_(b)
        if bn.bias is not None:
            new.bn_beta.copy_(bn.bias)
        if bn.weight is not None:
            new.bn_gamma.copy_(bn.weight)
        return new


# ------------------------------------------------------------------------------------------------ working state


@dataclass
class _Layer:
    """A conv / linear layer of a chain with float64 working copies of its tensors (written back at the end, so
    sweeps do not accumulate float32 rounding)."""

    name: str
    module: nn.Conv2d | nn.Linear
    w: Tensor
    b: Tensor | None
    beta: Tensor | None
    gamma: Tensor | None

    @classmethod
    def of(cls, name: str, module: nn.Conv2d | nn.Linear) -> _Layer:
        def f64(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.detach().double().clone()

        folded = isinstance(module, FoldedConv2d)
        return cls(
            name, module, f64(module.weight), f64(module.bias),  # type: ignore[arg-type]
            f64(module.bn_beta) if folded else None, f64(module.bn_gamma) if folded else None,
        )

    @property
    def groups(self) -> int:
        return self.module.groups if isinstance(self.module, nn.Conv2d) else 1

    @property
    def depthwise(self) -> bool:
        m = self.module
        return isinstance(m, nn.Conv2d) and 1 < m.groups == m.in_channels == m.out_channels

    def _grouped(self) -> Tensor:
        # (groups, out per group, in per group, kernel positions): input channel i is read by the outputs of group
        # i // (C_in / g) at weight column i % (C_in / g); a linear layer is one group with one "kernel position"
        g, cout, cin_g = self.groups, self.w.shape[0], self.w.shape[1]
        return self.w.reshape(g, cout // g, cin_g, -1)

    def out_range(self) -> Tensor:
        """``max |W[i, ...]|`` per output channel ``i``."""
        return self.w.abs().flatten(1).amax(1)

    def in_range(self) -> Tensor:
        """``max |W[o, i, ...]|`` over the weights reading input channel ``i``."""
        return self._grouped().abs().amax(dim=(1, 3)).reshape(-1)

    def scale_out(self, s: Tensor) -> None:
        """Output channel ``i`` divided by ``s_i`` (weight row, bias and the BN description of the output)."""
        self.w = self.w / s.reshape([-1] + [1] * (self.w.dim() - 1))
        self.b = None if self.b is None else self.b / s
        self.beta = None if self.beta is None else self.beta / s
        self.gamma = None if self.gamma is None else self.gamma / s

    def scale_in(self, s: Tensor) -> None:
        """Weights reading input channel ``i`` multiplied by ``s_i`` (the input arrives divided by ``s_i``)."""
        g = self._grouped()
        self.w = (g * s.reshape(g.shape[0], 1, g.shape[2], 1)).reshape(self.w.shape)

    def in_matvec(self, c: Tensor) -> Tensor:
        """The output of the layer's weights for an input constant ``c_i`` on each channel (summed over the kernel,
        zero padding ignored), per output channel."""
        g = self._grouped().sum(-1)  # (groups, out per group, in per group)
        return (g @ c.reshape(g.shape[0], g.shape[2], 1)).reshape(-1)


@dataclass
class _Link:
    """``a -> [activation] -> [global pool / flatten / dropout] -> b``: channel ``i`` of ``a``'s output is channel
    ``i`` of ``b``'s input, and positive per-channel scaling commutes with everything in between."""

    a: _Layer
    b: _Layer
    kind: str  # "relu", "clip" (a ChannelClip, the former ReLU6) or "linear" (no activation)
    clip: ChannelClip | None = None
    upper: Tensor | None = None  # float64 working copy of clip.upper

    def scale(self, s: Tensor) -> None:
        """Divide channel ``i`` between ``a`` and ``b`` by ``s_i``: the function computed does not change."""
        self.a.scale_out(s)
        if self.upper is not None:
            self.upper = self.upper / s
        self.b.scale_in(s)


# ------------------------------------------------------------------------------------------------ graph helpers


class _CallCounts:
    """How many call_module nodes call each module object. Keyed by identity, and it holds a reference to every module
    it counted: a module replaced during the pass must not be freed, or a new one could reuse its ``id``."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self._n: dict[int, int] = {}
        self._held: list[nn.Module] = []
        for node in gm.graph.nodes:
            if node.op == "call_module":
                self.add(gm.get_submodule(str(node.target)), 1)

    def add(self, m: nn.Module, k: int) -> None:
        self._n[id(m)] = self._n.get(id(m), 0) + k
        self._held.append(m)

    def __getitem__(self, m: nn.Module) -> int:
        return self._n.get(id(m), 0)


def _own_module(gm: fx.GraphModule, node: fx.Node, module: nn.Module, uses: _CallCounts) -> None:
    """Install ``module`` for ``node`` alone: in place when the old module is called only here, else under a new
    name (a ReLU6 instance shared by several call sites must not get this site's per-channel bounds)."""
    old = gm.get_submodule(str(node.target))
    if uses[old] <= 1:
        set_submodule(gm, str(node.target), module)
    else:
        base = f"{str(node.target).replace('.', '_')}_cle"
        name, k = base, 1
        while hasattr(gm, name):
            name, k = f"{base}{k}", k + 1
        gm.add_submodule(name, module)
        node.target = name
    uses.add(old, -1)
    uses.add(module, 1)


def _single_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _reads_only(node: fx.Node, src: fx.Node) -> bool:
    # node's only tensor input is src, passed first (extra non-tensor args such as flatten's start_dim are allowed)
    nodes = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node)]
    return bool(node.args) and node.args[0] is src and nodes == [src]


def _act_kind(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """"relu", "clip" (ChannelClip), "hardtanh" (ReLU6 or another ``Hardtanh(0, u)``), or None (not equivariant)."""
    m = node_module(gm, node)
    if m is not None:
        if isinstance(m, nn.ReLU):
            return "relu"
        if isinstance(m, ChannelClip):
            return "clip"
        if isinstance(m, nn.Hardtanh) and m.min_val == 0 and m.max_val > 0:
            return "hardtanh"
        return None
    if node.op == "call_function" and node.target in (torch.relu, F.relu):
        return "relu"
    if node.op == "call_method" and node.target == "relu":
        return "relu"
    return None


def _flatten_start(node: fx.Node, gm: fx.GraphModule) -> int | None:
    m = node_module(gm, node)
    if isinstance(m, nn.Flatten):
        return m.start_dim if m.end_dim == -1 else None
    is_flatten = (node.op == "call_function" and node.target is torch.flatten) or (
        node.op == "call_method" and node.target == "flatten"
    )
    if not is_flatten or node.kwargs.get("end_dim", -1) != -1 or len(node.args) > 2:
        return None
    return int(node.args[1]) if len(node.args) > 1 else int(node.kwargs.get("start_dim", 0))


def _is_global_pool(m: nn.Module | None) -> bool:
    return isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1))


def _weighted(gm: fx.GraphModule, node: fx.Node, uses: _CallCounts) -> nn.Conv2d | nn.Linear | None:
    # a conv / linear call_module that is called from this node only (a shared module cannot take per-site scales)
    m = node_module(gm, node)
    if isinstance(m, nn.Conv2d | nn.Linear) and uses[m] == 1 and len(node.args) == 1 and not node.kwargs:
        return m
    return None


def _next_layer(
    gm: fx.GraphModule, a_node: fx.Node, uses: _CallCounts
) -> tuple[fx.Node | None, str, fx.Node] | None:
    """``(activation node, kind, b node)`` when ``a_node``'s output reaches exactly one weighted layer through at most
    one equivariant activation and channel-preserving pass-through nodes, every tensor read once; else None."""
    a = _weighted(gm, a_node, uses)
    if a is None:
        return None
    node, act, kind = a_node, None, "linear"
    user = _single_user(node)
    if user is not None and _reads_only(user, node) and (k := _act_kind(gm, user)) is not None:
        act, kind, node = user, k, user
        user = _single_user(node)
    pooled = flat = False
    while user is not None and _reads_only(user, node):
        m = node_module(gm, user)
        if isinstance(m, nn.Dropout):
            pass
        elif _is_global_pool(m) and isinstance(a, nn.Conv2d) and not pooled:
            pooled = True
        elif pooled and not flat and _flatten_start(user, gm) == 1:
            flat = True  # (N, C, 1, 1) -> (N, C): feature i is channel i
        else:
            break
        node, user = user, _single_user(user)
    if user is None or not _reads_only(user, node):
        return None
    b = _weighted(gm, user, uses)
    c_out = a.out_channels if isinstance(a, nn.Conv2d) else a.out_features
    if isinstance(b, nn.Conv2d) and isinstance(a, nn.Conv2d) and not flat and b.in_channels == c_out:
        return act, kind, user
    if isinstance(b, nn.Linear) and b.in_features == c_out and (flat or (isinstance(a, nn.Linear) and not pooled)):
        return act, kind, user
    return None


# ------------------------------------------------------------------------------------------------ the passes


def _fold_bn(gm: fx.GraphModule, uses: _CallCounts) -> int:
    """Replace each conv whose only user is a BatchNorm2d (with running statistics) by a FoldedConv2d; BN removed."""
    n = 0
    for node in list(gm.graph.nodes):
        conv = node_module(gm, node)
        bn_node = _single_user(node)
        if type(conv) is not nn.Conv2d or uses[conv] != 1 or bn_node is None:
            continue
        bn = node_module(gm, bn_node)
        if not isinstance(bn, nn.BatchNorm2d) or uses[bn] != 1 or bn.running_mean is None:
            continue
        if bn.running_var is None or bn.num_features != conv.out_channels:
            continue
        folded = FoldedConv2d.from_conv_bn(conv, bn)
        _own_module(gm, node, folded, uses)
        bn_node.replace_all_uses_with(node)
        gm.graph.erase_node(bn_node)
        n += 1
    return n


def _equalise_pair(link: _Link) -> Tensor:
    r1, r2 = link.a.out_range(), link.b.in_range()
    ok = (r1 > 0) & (r2 > 0)
    s = torch.where(ok, torch.sqrt(r1 / torch.where(ok, r2, 1.0)), 1.0)
    link.scale(s)
    return s


def _equalise_triple(first: _Link, second: _Link) -> Tensor:
    # A -> dw -> C: dw's input is divided by s12 (W_dw *= s12) and its output by s23 (W_dw, b_dw /= s23), so the
    # ranges become r1 / s12, r2 s12 / s23, r3 s23, all equal to cbrt(r1 r2 r3)
    r1, r2, r3 = first.a.out_range(), first.b.out_range(), second.b.in_range()
    ok = (r1 > 0) & (r2 > 0) & (r3 > 0)
    cb = torch.where(ok, r1 * r2 * r3, 1.0).pow(1.0 / 3.0)
    s12 = torch.where(ok, r1 / cb, 1.0)
    s23 = torch.where(ok, cb / torch.where(ok, r3, 1.0), 1.0)
    first.scale(s12)
    second.scale(s23)
    return torch.cat([s12, s23])


def _sets(chain: list[_Link]) -> list[tuple[_Link, ...]]:
    """A chain cut into depthwise triples (when the link's b is a depthwise conv followed by another layer) and
    pairs; consecutive sets share a layer."""
    out: list[tuple[_Link, ...]] = []
    i = 0
    while i < len(chain):
        if i + 1 < len(chain) and chain[i].b.depthwise:
            out.append((chain[i], chain[i + 1]))
            i += 2
        else:
            out.append((chain[i],))
            i += 1
    return out


def _zero_padded(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.padding_mode == "zeros" and (m.padding == "same" or any(
        p > 0 for p in (m.padding if isinstance(m.padding, tuple) else ())))


def _absorb(link: _Link, into_padded: bool) -> tuple[int, int]:
    """High-bias absorption through a ReLU / ChannelClip (white paper eq. 24ff): ``c = max(0, beta - 3 |gamma|)``
    leaves ``a`` (``b_a -= c``, the distribution moves: ``beta -= c``, ChannelClip bound ``u -= c``) and enters ``b``'s
    bias as ``W_b c``. ``relu(z - c) = relu(z) - c`` and ``clip(z - c, 0, u - c) = clip(z, 0, u) - c`` hold wherever
    ``z >= c`` (c is capped at ``u``).

    ``W_b c`` sums over the whole kernel, but where ``b``'s kernel reads zero padding the shifted input is 0, not
    ``-c``, so border pixels of ``b``'s output move by the weights over the padding times ``c``. At ImageNet
    resolution that is a thin frame; on the 32 px minis (feature maps down to 2x2, where every pixel of a 3x3 conv
    is a border pixel) it dominated: output SQNR against the unabsorbed model fell to 5-20 dB. So ``b`` with zero
    padding is skipped unless ``into_padded``. Returns (channels absorbed, channels skipped for padding).
    """
    a = link.a
    if link.kind not in ("relu", "clip") or a.beta is None or a.gamma is None or a.b is None:
        return 0, 0
    c = (a.beta - 3 * a.gamma.abs()).clamp_min(0)
    if link.upper is not None:
        c = torch.minimum(c, link.upper.clamp_min(0))
    n = int((c > 0).sum())
    if n == 0:
        return 0, 0
    if not into_padded and _zero_padded(link.b.module):
        return 0, n
    a.b = a.b - c
    a.beta = a.beta - c
    if link.upper is not None:
        link.upper = link.upper - c
    shift = link.b.in_matvec(c)
    link.b.b = shift if link.b.b is None else link.b.b + shift
    return n, 0


def _spread(layer: _Layer) -> float:
    """max / min over output channels of the per-output-channel weight range (channels with zero range left out)."""
    r = layer.out_range()
    r = r[r > 0]
    return float(r.max() / r.min()) if r.numel() else 1.0


@torch.no_grad()
def _write_back(layer: _Layer) -> None:
    m = layer.module
    m.weight.copy_(layer.w.to(m.weight.dtype))
    if layer.b is not None:
        if m.bias is None:
            m.bias = nn.Parameter(torch.zeros_like(m.weight[:, 0].flatten()))  # absorption gave b a bias
        m.bias.copy_(layer.b.to(m.bias.dtype))
    if isinstance(m, FoldedConv2d):
        assert layer.beta is not None and layer.gamma is not None
        m.bn_beta.copy_(layer.beta.to(m.bn_beta.dtype))
        m.bn_gamma.copy_(layer.gamma.to(m.bn_gamma.dtype))


def equalize(
    model: nn.Module, *, absorb_bias: bool = True, iterations: int = 20, absorb_into_padded: bool = False
) -> tuple[fx.GraphModule, dict[str, Any]]:
    """Fold BN, equalise weight ranges across consecutive layers and absorb high biases (module docstring).

    ``model`` is not changed; the result is a new ``GraphModule`` in eval mode. ``iterations`` bounds the sweeps over
    a chain longer than one pair / triple (they stop earlier once every scale is 1). High biases are not absorbed
    into a layer with zero padding unless ``absorb_into_padded`` (see ``_absorb``: wrong at every border pixel).
    Returns the model and a report: ``folded_bn``, ``cle_chains``, ``cle_pairs``, ``cle_triples``, ``cle_sweeps``
    (most sweeps any chain took), ``relu6_to_clip``, ``absorbed_channels``, ``absorb_skipped_padded`` (channels with
    ``c > 0`` left alone because the next layer pads), ``range_spread_before`` / ``range_spread_after`` (mean over the
    equalised layers of max/min of the per-output-channel weight ranges, before = after BN folding) and
    ``range_spread`` (per layer ``[before, after]``).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    gm = trace(copy.deepcopy(model).eval())
    gm.eval()
    uses = _CallCounts(gm)
    folded = _fold_bn(gm, uses)

    # links between consecutive layers, then chains (each layer has at most one successor and one predecessor)
    found: dict[fx.Node, tuple[fx.Node | None, str, fx.Node]] = {}
    for node in gm.graph.nodes:
        nxt = _next_layer(gm, node, uses)
        if nxt is not None:
            found[node] = nxt
    layers: dict[fx.Node, _Layer] = {}

    def layer(node: fx.Node) -> _Layer:
        if node not in layers:
            layers[node] = _Layer.of(str(node.target), gm.get_submodule(str(node.target)))  # type: ignore[arg-type]
        return layers[node]

    to_clip = 0
    links: dict[fx.Node, _Link] = {}
    for a_node, (act, kind, b_node) in found.items():
        link = _Link(layer(a_node), layer(b_node), "linear" if kind == "linear" else "relu")
        if act is not None and kind in ("hardtanh", "clip"):
            old = gm.get_submodule(str(act.target))
            if isinstance(old, ChannelClip):
                clip = copy.deepcopy(old) if uses[old] > 1 else old
            else:  # ReLU6: its bound gets scaled with the channels
                assert isinstance(old, nn.Hardtanh)
                w = link.a.module.weight
                clip = ChannelClip(link.a.w.shape[0], old.max_val).to(device=w.device, dtype=w.dtype)
                to_clip += 1
            if clip is not old:
                _own_module(gm, act, clip, uses)
            link.kind, link.clip, link.upper = "clip", clip, clip.upper.detach().double().clone()
        links[a_node] = link
    heads = [n for n in links if n not in {b for _, _, b in found.values()}]
    chains: list[list[_Link]] = []
    for head in heads:
        chain, node = [], head
        while node in links:
            chain.append(links[node])
            node = found[node][2]
        chains.append(chain)

    before = {lay.name: _spread(lay) for lay in layers.values()}
    pairs = triples = sweeps_max = 0
    for chain in chains:
        sets = _sets(chain)
        pairs += sum(len(s) == 1 for s in sets)
        triples += sum(len(s) == 2 for s in sets)
        for sweep in range(1, iterations + 1):
            worst = 0.0
            for st in sets:
                s = _equalise_pair(st[0]) if len(st) == 1 else _equalise_triple(*st)
                worst = max(worst, float(s.log().abs().max()))
            sweeps_max = max(sweeps_max, sweep)
            if worst < _CONVERGED:
                break
    absorbed = skipped = 0
    if absorb_bias:
        for chain in chains:
            for link in chain:
                n, k = _absorb(link, absorb_into_padded)
                absorbed, skipped = absorbed + n, skipped + k
    after = {lay.name: _spread(lay) for lay in layers.values()}

    for lay in layers.values():
        _write_back(lay)
    with torch.no_grad():
        for link in links.values():
            if link.clip is not None and link.upper is not None:
                link.clip.upper.copy_(link.upper.to(link.clip.upper.dtype))
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    gm.eval()

    def mean(d: dict[str, float]) -> float:
        return float(sum(d.values()) / len(d)) if d else 1.0

    report: dict[str, Any] = {
        "folded_bn": folded,
        "cle_chains": len(chains),
        "cle_pairs": pairs,
        "cle_triples": triples,
        "cle_sweeps": sweeps_max,
        "relu6_to_clip": to_clip,
        "absorbed_channels": absorbed,
        "absorb_skipped_padded": skipped,
        "range_spread_before": mean(before),
        "range_spread_after": mean(after),
        "range_spread": {k: [before[k], after[k]] for k in before},
    }
    return gm, report
