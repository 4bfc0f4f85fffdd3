"""Post-training quantization: calibration, BN re-calibration and the PTQ methods built on them."""
