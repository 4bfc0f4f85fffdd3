"""Deployment checks: integer-only execution (executor, check; the requantization
arithmetic is ``bench.quant.fixedpoint``), ONNX export with onnxruntime
evaluation (onnx_export), its exact rewrite for onnxruntime's x86 integer kernels
(ort_graph) and FP32 vs INT8 latency per profile next to onnxruntime's own
quantization (latency, ort_reference)."""
