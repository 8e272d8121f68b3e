"""The network description shared by every stage (`network`), the graph passes written once (`passes`), the
lowering to a deployable chain (`lowering`) and the torch modules built from it (`torch_net`)."""
from .network import (BATCH_NORMS, LAYER_TYPES, SYNAPTIC, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout,
                      Flatten, Layer, Linear, Network, Residual, Shape, Spike, chain_shapes, conv_out_size, iter_layers,
                      layer_from_dict, layer_to_dict)

__all__ = ["BATCH_NORMS", "LAYER_TYPES", "SYNAPTIC", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv2d", "Dropout",
           "Flatten", "Layer", "Linear", "Network", "Residual", "Shape", "Spike", "chain_shapes", "conv_out_size", "iter_layers",
           "layer_from_dict", "layer_to_dict"]
