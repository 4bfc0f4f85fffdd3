"""onnxruntime's own static quantization of an FP32 ONNX model: the reference column of the latency table.

``quant_pre_process`` (symbolic shape inference and onnxruntime's graph optimisation of the FP32 model), then
``quantize_static`` in QDQ format with onnxruntime's defaults for x86: uint8 asymmetric per-tensor activations, int8
symmetric per-channel weights, MinMax calibration, here on random images (latency needs no dataset). Every
quantizable op is quantized (adds, pooling, the classifier's output), as onnxruntime chooses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

REFERENCE_GRID = "u8 asymmetric per-tensor activations, s8 symmetric per-channel weights (onnxruntime's x86 default)"


def preprocess(fp32: str | Path, out: str | Path) -> None:
    """onnxruntime's ``quant_pre_process`` of ``fp32`` into ``out``: the FP32 graph both the reference and the FP32
    timing start from."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32), str(out))


def quantize_reference(fp32_pre: str | Path, out: str | Path, image_size: int, calib_images: int = 8,
                       seed: int = 0) -> None:
    """onnxruntime's ``quantize_static`` (QDQ, u8 activations, s8 per-channel weights) of the pre-processed FP32
    model, calibrated on ``calib_images`` random images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    rng = np.random.default_rng(seed)
    feeds = [{"input": rng.standard_normal((1, 3, image_size, image_size)).astype(np.float32)}
             for _ in range(calib_images)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    quantize_static(str(fp32_pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
