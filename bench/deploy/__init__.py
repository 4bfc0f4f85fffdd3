"""Deployment checks: integer-only execution (executor, fixedpoint, check), ONNX export with onnxruntime
evaluation (onnx_export) and FP32 vs INT8 latency (latency)."""
