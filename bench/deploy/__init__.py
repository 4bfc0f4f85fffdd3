"""Deployment checks: integer-only execution (executor, check; the requantization
arithmetic is ``bench.quant.fixedpoint``), ONNX export with onnxruntime
evaluation (onnx_export) and FP32 vs INT8 latency (latency)."""
