"""``python -m bench export``: a quantized cell run with ``deploy.onnx=true`` (QDQ ONNX + onnxruntime accuracy)."""

from __future__ import annotations

from bench.cli.run import cell_verb

SUMMARY = (
    "Runs a quantized cell (as `run`), writes its model as ONNX with QuantizeLinear/DequantizeLinear pairs (opset\n"
    "13, per-channel where the profile is; 8-bit profiles) to <run dir>/model.onnx and every quantizer's scale and\n"
    "zero point to model.qparams.json, then evaluates the ONNX model with onnxruntime on the test set: its top-1\n"
    "and agreement with fake quantization go into result.json (extra.onnx). Same overrides as `run`."
)
EXAMPLES = [
    "python -m bench export algo=ptq hw=tensorrt bits=w8a8",
    "python -m bench export algo=lsq hw=fbgemm bits=w8a8 arch=mobilenetv2_mini",
    "python -m bench export -m algo=ptq hw=tensorrt,tvm,acl,snpe,fbgemm bits=w8a8",
]


def main(argv: list[str]) -> int:
    """Entry of the ``export`` verb."""
    return cell_verb("export", argv, SUMMARY, EXAMPLES, extra=["deploy.onnx=true"])
