"""Input codings: what the first layer receives at each time step, in training and on the chip."""
