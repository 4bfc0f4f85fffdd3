"""``python -m bench check-real``: a quantized cell run with ``deploy.check=true``."""

from __future__ import annotations

from bench.cli.run import cell_verb

SUMMARY = (
    "Runs a quantized cell (as `run`) and then executes its model with integer-only arithmetic (int8/intN weights\n"
    "and activations, int32 accumulators and biases, the profile's requantization): records the fake-quant and\n"
    "integer top-1, the share of test images whose predictions agree, and the logit difference in output steps\n"
    "(result.json: extra.deploy). Same overrides as `run`; the check is part of the cell's config_hash."
)
EXAMPLES = [
    "python -m bench check-real algo=ptq hw=tensorrt bits=w8a8",
    "python -m bench check-real algo=lsq hw=tvm arch=mobilenetv2_mini",
    "python -m bench check-real -m algo=ptq hw=academic,tensorrt,tvm,acl,snpe,fbgemm bits=w8a8,w4a4",
    "python -m bench check-real algo=ptq data=synthetic arch=tiny debug=smoke   # seconds",
]


def main(argv: list[str]) -> int:
    """Entry of the ``check-real`` verb."""
    return cell_verb("check-real", argv, SUMMARY, EXAMPLES, extra=["deploy.check=true"])
