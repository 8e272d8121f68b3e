"""The fused and block-by-block runs of the neurons, and the compiled C kernels behind them."""
