"""Quantization to Loihi fixed point (`quantize`: prepare -> calibrate -> convert) and the fixed-point network (`fixed_point`)."""
