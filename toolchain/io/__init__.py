"""Files: checkpoints, atomic writes, netx (Lava-DL), NIR and ONNX."""
