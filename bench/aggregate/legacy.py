"""What schema-1 records do not say about themselves. Frozen: never extended.

From record schema 2 on, a record describes itself: its algorithm's ``kind``, its dataset's ``num_classes``, and the
display ``labels`` and table ``order`` of its algo / hw / arch / calibration values, all taken from the registries'
metadata when the cell ran. Records written before (schema 1, among them every record behind the committed fmnist-mini
leaderboard of that time) lack these fields, and for them the aggregator falls back to the maps below, exactly as they
stood when schema 2 came: so old records still aggregate into the same tables, byte for byte.

A new algorithm, profile, architecture, calibration or dataset describes itself in its records: do not add it here.
"""

from __future__ import annotations

from types import MappingProxyType

# Algorithm kinds of the registry when schema 2 came (bench/algos/*.py ``kind``).
KINDS = MappingProxyType({
    "fp32": "fp32",
    "ptq": "ptq", "adaround": "ptq", "brecq": "ptq", "qdrop": "ptq", "bitsplit": "ptq", "ioso": "ptq",
    "lsq": "qat", "lsqplus": "qat", "pact": "qat", "dsq": "qat", "dorefa": "qat", "qil": "qat", "apot": "qat",
})

# Classes of the datasets (chance level = 100 / classes %).
NUM_CLASSES = MappingProxyType({"fashion_mnist": 10, "synthetic": 10, "imagenet": 1000})

_CALIB = ("minmax", "mse", "kld", "quantile", "norm", "meanstd", "bn")
# Table order of each axis (the paper's), first to last. An arch is looked up without its ``_mini`` suffix. Positions
# are on the registries' scale (10, 20, 30, ...: ``order`` in the records), so old and new records sort together.
ORDERS = MappingProxyType({
    "algo": ("lsq", "lsqplus", "apot", "qil", "dsq", "pact", "dorefa", "ptq", "adaround", "brecq", "qdrop",
             "bitsplit", "ioso", "fp32"),
    "hw": ("academic", "tensorrt", "acl", "tvm", "snpe", "fbgemm"),
    "arch": ("resnet18", "resnet50", "mobilenetv2", "efficientnet_lite0", "regnetx_600mf"),
    "calib_weight": _CALIB,
    "calib_act": _CALIB,
})

_CALIB_LABELS = {"minmax": "MinMax", "mse": "MSE", "kld": "KLD", "quantile": "Quantile", "norm": "Norm",
                 "meanstd": "MeanStd", "bn": "BN"}
# Display names in the Markdown tables and figures; archs were shown by their names.
LABELS = MappingProxyType({
    "algo": MappingProxyType({
        "lsq": "LSQ", "lsqplus": "LSQ+", "apot": "APoT", "qil": "QIL", "dsq": "DSQ", "pact": "PACT",
        "dorefa": "DoReFa", "ptq": "PTQ", "adaround": "AdaRound", "brecq": "BRECQ", "qdrop": "QDrop",
        "bitsplit": "Bit-Split", "ioso": "IOSO", "fp32": "FP32"}),
    "hw": MappingProxyType({"academic": "Academic", "tensorrt": "TensorRT", "acl": "ACL", "tvm": "TVM",
                            "snpe": "SNPE", "fbgemm": "FBGEMM"}),
    "arch": MappingProxyType({}),
    "calib_weight": MappingProxyType(_CALIB_LABELS),
    "calib_act": MappingProxyType(_CALIB_LABELS),
})


def index(axis: str, value: object) -> int | None:
    """Index of ``value`` in ``ORDERS[axis]`` (0 = first); None if the legacy maps do not know it."""
    names = ORDERS.get(axis, ())
    name = str(value)
    if axis == "arch":
        name = name.removesuffix("_mini")  # the mini track's archs sort as their full-size counterparts
    return names.index(name) if name in names else None


def order(axis: str, value: object) -> int | None:
    """Legacy table position of ``value`` on ``axis`` (10, 20, ...: the registries' scale); None if unknown."""
    i = index(axis, value)
    return None if i is None else 10 * (i + 1)


def label(axis: str, value: object) -> str | None:
    """Legacy display name of ``value`` on ``axis``; None if the legacy maps have none."""
    return LABELS.get(axis, {}).get(str(value))
