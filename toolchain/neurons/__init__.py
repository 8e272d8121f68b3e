"""Neuron models: the interface (`base`), the registry (`registry`: NEURONS), one module per model (`subtractive`:
IF / LIF, reset by subtraction; `loihi_cuba`: Loihi's CUBA LIF), surrogate gradients (`surrogates`), running a
model over time (`run`: run_neurons and execution_path) and the fast runs behind it (`kernels`)."""
from .base import ChipNeuron, NeuronModel, NeuronState, NirNeuron, initial_state
from .registry import NEURONS
from .run import execution_path, run_neurons

__all__ = ["ChipNeuron", "NEURONS", "NeuronModel", "NeuronState", "NirNeuron", "execution_path", "initial_state", "run_neurons"]
