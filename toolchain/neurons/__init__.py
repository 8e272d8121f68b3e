"""Neuron models: the interface and registry, one module per model, surrogate gradients, and the kernels."""
