"""The quantization core: quantizer maths, observers, hardware profiles, quantized modules, graph insertion."""
