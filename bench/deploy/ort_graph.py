"""Exact rewrites of an exported QDQ graph so that onnxruntime's x86 CPU kernels run it in integers where the
profile's grid allows (:func:`bench.deploy.onnx_export.ort_variant` writes the result as ``<model>.ort.onnx``).

The TorchScript exporter writes every fake quantization as QuantizeLinear + DequantizeLinear, weights included, and
leaves each activation function (and a max pool) between its layer and the quantizer that follows. onnxruntime fuses
``DequantizeLinear -> Conv / Gemm / MatMul -> QuantizeLinear`` into one integer kernel (QLinearConv & co.) only when
the QuantizeLinear follows the layer directly; on x86 it fuses only uint8 activations (MLAS multiplies u8 x s8) and
it never folds a constant DequantizeLinear, so a layer it cannot fuse dequantizes its weights on every run. The
rewrites, each exact (the rewritten graph computes the same numbers as the exported one, with or without
onnxruntime's optimisations, up to the summation order of a float layer whose weights became a constant):

1. :func:`fold_weight_quantize`: a QuantizeLinear of constants becomes its int8 / uint8 initializer (computed as
   onnxruntime computes it: ``clip(rint(x / scale) + zero_point)``, float32 division, half to even).
2. :func:`clamp_after_quantize`: the ``Relu`` / ``Clip`` / ``MaxPool`` chain feeding a per-tensor QuantizeLinear moves
   behind it: quantization is monotone, so ``Q(clip(x, lo, hi)) == clip(Q(x), Q(lo), Q(hi))`` and ``Q(max(x)) ==
   max(Q(x))``. The max pools run on the codes; the clamp becomes a Clip of the codes, dropped where it cannot bind
   (a ReLU before an unsigned grid with zero point 0). A signed grid keeps its clamp.
3. :func:`fold_float_weights`: a weight DequantizeLinear whose layer cannot run as an integer kernel (its input is
   not dequantized, or its output is not quantized alone) becomes the float initializer it computes,
   ``(q - zero_point) * scale`` in float32.
4. :func:`unsigned_activations`: int8 activation codes are stored as uint8 codes + 128 with the zero point moved by
   128 (``Q_u8(x) = Q_s8(x) + 128``: the same values), which is what lets onnxruntime fuse TensorRT's and TVM's signed
   grids into integer kernels on x86.
5. :func:`signed_weights`: uint8 weight codes become int8 codes - 128 with the zero point moved by 128 (SNPE's
   uint8 weights), the weight type of MLAS's u8 x s8 kernels.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

INTEGER_LAYERS = ("Conv", "Gemm", "MatMul")  # what onnxruntime fuses with its QDQ neighbours into integer kernels
SHAPE_OPS = ("Flatten", "Reshape")  # move values without changing them: they commute with (de)quantization


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Values of the initializers, Constant nodes and Identity nodes of those (the exporter shares equal zero-point
    tensors through Identity), by tensor name."""
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:  # topological order: an Identity's input is known before it
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in consts:
            consts[node.output[0]] = consts[node.input[0]]
    return consts


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            users[name].append(node)
    return users


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def _broadcast(v: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """A per-channel scale / zero point shaped to broadcast along ``axis`` of an ``ndim`` tensor."""
    if v.ndim == 0 or v.size == 1 or ndim == 0:
        return v.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = v.size
    return v.reshape(shape)


def quantize_like_ort(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int = 1) -> np.ndarray:
    """QuantizeLinear as onnxruntime computes it: float32 ``x / scale``, round half to even, plus the zero point,
    clamped to the zero point's integer type."""
    info = np.iinfo(zero_point.dtype)
    s = _broadcast(scale.astype(np.float32), axis, x.ndim)
    z = _broadcast(zero_point.astype(np.int64), axis, x.ndim)
    q = np.rint(x.astype(np.float32) / s).astype(np.int64) + z
    return np.clip(q, info.min, info.max).astype(zero_point.dtype)


def dequantize_like_ort(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int = 1) -> np.ndarray:
    """DequantizeLinear as onnxruntime computes it: ``float(q - zero_point) * scale`` in float32."""
    s = _broadcast(scale.astype(np.float32), axis, q.ndim)
    z = _broadcast(zero_point.astype(np.int32), axis, q.ndim)
    return ((q.astype(np.int32) - z).astype(np.float32) * s).astype(np.float32)


def _replace_with_initializer(model: onnx.ModelProto, node: onnx.NodeProto, value: np.ndarray) -> None:
    model.graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
    model.graph.node.remove(node)


def fold_weight_quantize(model: onnx.ModelProto) -> int:
    """Replace each QuantizeLinear of constant inputs by its integer initializer; returns how many."""
    consts = _constants(model)
    done = 0
    for node in [n for n in model.graph.node if n.op_type == "QuantizeLinear"]:
        if len(node.input) == 3 and all(i in consts for i in node.input):
            x, s, z = (consts[i] for i in node.input)
            _replace_with_initializer(model, node, quantize_like_ort(x, s, z, _axis(node)))
            done += 1
    return done


def _clamp_range(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> tuple[float | None, float | None] | None:
    """``(lo, hi)`` of a Relu / Clip with constant bounds (None: unbounded), or None for anything else."""
    if node.op_type == "Relu":
        return 0.0, None
    if node.op_type != "Clip":
        return None
    bounds: list[float | None] = []
    for k in (1, 2):
        name = node.input[k] if len(node.input) > k else ""
        if name and name not in consts:
            return None
        bounds.append(float(consts[name]) if name else None)
    return bounds[0], bounds[1]


def clamp_after_quantize(model: onnx.ModelProto) -> int:
    """Move the chain of Relu / Clip / MaxPool nodes that feeds only a per-tensor QuantizeLinear behind it: the max
    pools run on the integer codes, the clamps become one Clip of the codes (dropped where it cannot bind). Exact,
    because quantization is monotone (it commutes with max and with clamping). Returns how many nodes moved."""
    consts, users = _constants(model), _consumers(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    outputs = {o.name for o in model.graph.output}
    moved = 0
    for q in [n for n in model.graph.node if n.op_type == "QuantizeLinear"]:
        if len(q.input) != 3 or not all(i in consts for i in q.input[1:]) or consts[q.input[1]].size != 1:
            continue
        chain: list[onnx.NodeProto] = []
        node = producer.get(q.input[0])
        while (node is not None and (node.op_type == "MaxPool" or _clamp_range(node, consts) is not None)
               and node.output[0] not in outputs and len(users[node.output[0]]) == 1 and len(node.output) == 1):
            chain.append(node)
            node = producer.get(node.input[0])
        if not chain:
            continue
        s, z = consts[q.input[1]], consts[q.input[2]]
        info = np.iinfo(z.dtype)
        qlo, qhi = info.min, info.max
        for c in chain:
            if c.op_type != "MaxPool":
                lo, hi = _clamp_range(c, consts)  # type: ignore[misc]
                if lo is not None:
                    qlo = max(qlo, int(quantize_like_ort(np.array(lo, np.float32), s, z)))
                if hi is not None:
                    qhi = min(qhi, int(quantize_like_ort(np.array(hi, np.float32), s, z)))
        pools = [c for c in reversed(chain) if c.op_type == "MaxPool"]  # in the order they ran
        codes = q.output[0]
        q.input[0] = chain[-1].input[0]
        for c in chain:
            model.graph.node.remove(c)
        moved += len(chain)
        at = list(model.graph.node).index(q) + 1
        tail = f"{codes}_unclamped"
        q.output[0] = tail if pools or (qlo > info.min or qhi < info.max) else codes
        for k, pool in enumerate(pools):  # max pooling of the codes (padding never wins a max, as in float)
            last = k == len(pools) - 1 and qlo <= info.min and qhi >= info.max
            out = codes if last else f"{codes}_pool{k}"
            pool.input[0], pool.output[0] = tail, out
            model.graph.node.insert(at, pool)
            at, tail = at + 1, out
        if qlo > info.min or qhi < info.max:  # a clamp that can bind on this grid
            lo_name, hi_name = f"{codes}_clamp_lo", f"{codes}_clamp_hi"
            model.graph.initializer.extend([numpy_helper.from_array(np.array(qlo, dtype=z.dtype), lo_name),
                                            numpy_helper.from_array(np.array(qhi, dtype=z.dtype), hi_name)])
            model.graph.node.insert(at, helper.make_node("Clip", [tail, lo_name, hi_name], [codes],
                                                         name=f"{codes}_clamp_on_codes"))
    return moved


def reshape_before_dequantize(model: onnx.ModelProto) -> int:
    """Move a Flatten / Reshape that reads a per-tensor DequantizeLinear in front of it, onto the integer codes
    (``reshape(DQ(q)) == DQ(reshape(q))``), so the layer after it reads a DequantizeLinear; returns how many."""
    consts, users = _constants(model), _consumers(model)
    outputs = {o.name for o in model.graph.output}
    producer = {o: n for n in model.graph.node for o in n.output}
    done = 0
    for shape in [n for n in model.graph.node if n.op_type in SHAPE_OPS]:
        dq = producer.get(shape.input[0])
        if (dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] in consts or len(dq.input) != 3
                or not all(i in consts for i in dq.input[1:]) or consts[dq.input[1]].size != 1
                or len(users[dq.output[0]]) != 1 or dq.output[0] in outputs):
            continue
        codes, values, out = dq.input[0], dq.output[0], shape.output[0]
        shape.input[0], shape.output[0] = codes, f"{values}_reshaped_codes"
        dq.input[0], dq.output[0] = shape.output[0], out
        model.graph.node.remove(shape)
        model.graph.node.insert(list(model.graph.node).index(dq), shape)
        done += 1
    return done


def gemm_int32_bias(model: onnx.ModelProto) -> int:
    """Give a Gemm of dequantized inputs whose output stays float its bias as int32 codes on the accumulator grid
    ``s_x s_w`` behind a DequantizeLinear, where that is the same float bias bit for bit (the simulation's biases are
    on that grid): onnxruntime then runs it as one integer QGemm with a float output. Returns how many."""
    consts, users = _constants(model), _consumers(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    done = 0
    for gemm in [n for n in model.graph.node if n.op_type == "Gemm" and len(n.input) == 3 and n.input[2] in consts]:
        dx, dw = producer.get(gemm.input[0]), producer.get(gemm.input[1])
        if (dx is None or dw is None or dx.op_type != "DequantizeLinear" or dw.op_type != "DequantizeLinear"
                or not all(i in consts for i in [*dx.input[1:], *dw.input]) or consts[dx.input[1]].size != 1):
            continue
        if len(users[gemm.output[0]]) == 1 and users[gemm.output[0]][0].op_type == "QuantizeLinear":
            continue  # onnxruntime fuses that one as it is
        bias = consts[gemm.input[2]].astype(np.float32)
        step = (consts[dx.input[1]].astype(np.float32).reshape(()) * consts[dw.input[1]].astype(np.float32))
        step = np.broadcast_to(step.reshape(-1), bias.shape).astype(np.float32)
        codes = np.rint(bias / step)
        if np.abs(codes).max(initial=0) >= 2**24 or not np.array_equal((codes.astype(np.float32) * step), bias):
            continue
        name = f"{gemm.input[2]}_int32"
        model.graph.initializer.extend([numpy_helper.from_array(codes.astype(np.int32), name),
                                        numpy_helper.from_array(step, f"{name}_scale"),
                                        numpy_helper.from_array(np.zeros(step.shape, np.int32), f"{name}_zero_point")])
        dq = helper.make_node("DequantizeLinear", [name, f"{name}_scale", f"{name}_zero_point"], [f"{name}_dq"],
                              axis=0, name=f"{name}_dq")
        model.graph.node.insert(list(model.graph.node).index(gemm), dq)
        gemm.input[2] = dq.output[0]
        done += 1
    return done


def fold_float_weights(model: onnx.ModelProto) -> int:
    """Replace the constant weight DequantizeLinear of each layer that cannot run as an integer kernel by the float
    initializer it computes; returns how many."""
    consts, users = _constants(model), _consumers(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    outputs = {o.name for o in model.graph.output}
    done = 0
    for dq in [n for n in model.graph.node if n.op_type == "DequantizeLinear"]:
        if len(dq.input) != 3 or not all(i in consts for i in dq.input):
            continue
        layers = users[dq.output[0]]
        if not layers or any(n.op_type not in INTEGER_LAYERS for n in layers):
            continue

        def integer(layer: onnx.NodeProto) -> bool:
            src = producer.get(layer.input[0])
            out = layer.output[0]
            if src is None or src.op_type != "DequantizeLinear":
                return False
            bias = producer.get(layer.input[2]) if len(layer.input) > 2 else None
            if layer.op_type == "Gemm" and bias is not None and bias.op_type == "DequantizeLinear":
                return True  # QGemm with a float output (gemm_int32_bias)
            return out not in outputs and len(users[out]) == 1 and users[out][0].op_type == "QuantizeLinear"

        if any(integer(n) for n in layers):
            continue
        q, s, z = (consts[i] for i in dq.input)
        _replace_with_initializer(model, dq, dequantize_like_ort(q, s, z, _axis(dq)))
        done += 1
    return done


def _shift_codes(model: onnx.ModelProto, q: onnx.NodeProto, consts: dict[str, np.ndarray],
                 users: dict[str, list[onnx.NodeProto]]) -> bool:
    """Re-express the int8 codes of quantizer ``q`` as uint8 codes + 128 in ``q``, the Clips on them and the
    DequantizeLinears that read them; False (nothing changed) if something else reads them."""
    outputs = {o.name for o in model.graph.output}
    chain, dqs, frontier = [], [], [q.output[0]]
    while frontier:
        name = frontier.pop()
        if name in outputs:  # codes the graph returns keep their type
            return False
        for n in users[name]:
            if n.op_type == "DequantizeLinear" and n.input[1:] == q.input[1:]:
                dqs.append(n)
            elif n.op_type == "Clip" and n.input[0] == name and all(i in consts for i in n.input[1:]):
                chain.append(n)
                frontier.append(n.output[0])
            elif n.op_type in ("MaxPool", *SHAPE_OPS) and n.input[0] == name and len(n.output) == 1:
                frontier.append(n.output[0])  # max and reshapes commute with adding 128
            else:
                return False
    z = consts[q.input[2]]
    zu = f"{q.input[2]}_as_uint8"
    model.graph.initializer.append(numpy_helper.from_array((z.astype(np.int16) + 128).astype(np.uint8), zu))
    for n in [q, *dqs]:
        n.input[2] = zu
    for clip in chain:
        for k in (1, 2):
            if len(clip.input) > k and clip.input[k]:
                bound = consts[clip.input[k]]
                clip.input[k] = f"{clip.input[k]}_as_uint8"
                model.graph.initializer.append(
                    numpy_helper.from_array((bound.astype(np.int16) + 128).astype(np.uint8), clip.input[k]))
    return True


def unsigned_activations(model: onnx.ModelProto) -> int:
    """Store signed int8 activation codes as uint8 codes + 128 (the same values: ``Q_u8(x) = Q_s8(x) + 128`` with the
    zero point moved by 128), the activations onnxruntime's x86 integer kernels take; returns how many quantizers."""
    consts, users = _constants(model), _consumers(model)
    done = 0
    for q in [n for n in model.graph.node if n.op_type == "QuantizeLinear"]:
        if (len(q.input) == 3 and q.input[0] not in consts and q.input[2] in consts
                and consts[q.input[2]].dtype == np.int8 and consts[q.input[2]].size == 1):
            done += _shift_codes(model, q, consts, users)
    return done


def signed_weights(model: onnx.ModelProto) -> int:
    """Store uint8 weight codes as int8 codes - 128 with the zero point moved by 128 (the same values), the weights
    onnxruntime's x86 integer kernels take; returns how many."""
    consts, users = _constants(model), _consumers(model)
    done = 0
    for dq in [n for n in model.graph.node if n.op_type == "DequantizeLinear"]:
        if len(dq.input) != 3 or not all(i in consts for i in dq.input) or consts[dq.input[0]].dtype != np.uint8:
            continue
        if len(users[dq.input[0]]) != 1:
            continue  # codes shared with another reader: leave them
        for k in (0, 2):
            v = consts[dq.input[k]]
            dq.input[k] = f"{dq.input[k]}_as_int8"
            model.graph.initializer.append(numpy_helper.from_array((v.astype(np.int16) - 128).astype(np.int8),
                                                                   dq.input[k]))
        done += 1
    return done


def _drop_unused(model: onnx.ModelProto) -> None:
    """Remove the initializers, Constant and Identity nodes nothing reads any more (the bounds of moved clamps...)."""
    graph_out = {o.name for o in model.graph.output}
    while True:  # an Identity removed can leave its Constant unread
        used = {i for n in model.graph.node for i in n.input} | graph_out
        dead = [n for n in model.graph.node if n.op_type in ("Constant", "Identity") and n.output[0] not in used]
        if not dead:
            break
        for node in dead:
            model.graph.node.remove(node)
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def inline_constants(model: onnx.ModelProto) -> None:
    """Constant nodes become initializers and readers of an Identity of a constant read the constant itself (the
    exporter shares equal zero-point tensors that way), so every rewrite sees constants as initializers."""
    outputs = {o.name for o in model.graph.output}
    names = {i.name for i in model.graph.initializer}
    alias: dict[str, str] = {}
    for node in list(model.graph.node):
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value" \
                and node.output[0] not in outputs:
            model.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t),
                                                                   node.output[0]))
            names.add(node.output[0])
            model.graph.node.remove(node)
        elif node.op_type == "Identity" and alias.get(node.input[0], node.input[0]) in names \
                and node.output[0] not in outputs:
            alias[node.output[0]] = alias.get(node.input[0], node.input[0])
            model.graph.node.remove(node)
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name in alias:
                node.input[k] = alias[name]


def optimize_for_ort(model: onnx.ModelProto) -> dict[str, int]:
    """Apply the rewrites in place (see the module docstring); returns what each changed."""
    inline_constants(model)
    stats = {"weights_quantized": fold_weight_quantize(model), "clamps_moved": clamp_after_quantize(model),
             "reshapes_moved": reshape_before_dequantize(model), "gemm_int32_biases": gemm_int32_bias(model),
             "float_weights": fold_float_weights(model), "activations_unsigned": unsigned_activations(model),
             "weights_signed": signed_weights(model)}
    _drop_unused(model)
    onnx.checker.check_model(model)
    return stats
