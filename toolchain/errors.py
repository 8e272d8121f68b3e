"""Exception classes of the toolchain.

Every error a user can cause derives from ToolchainError; the CLI prints its message as one line
on stderr and exits non-zero, without a traceback.
"""


class ToolchainError(Exception):
    """Base class: a problem with the user's input or artifacts, reported in one line."""


class DataError(ToolchainError):
    """A dataset is missing, malformed, or of an unexpected shape."""


class ModelError(ToolchainError):
    """An unknown model name or an invalid network description."""


class ShapeError(ModelError):
    """Layer shapes do not chain; the message names the layer."""


class CheckpointError(ToolchainError):
    """A checkpoint file is missing, corrupt, or of the wrong kind."""


class ConfigError(ToolchainError):
    """An impossible or inconsistent argument."""


class QuantizationError(ToolchainError):
    """A value cannot be represented in Loihi's fixed-point formats; the message names the layer."""


class LoweringError(ToolchainError):
    """A layer has no netx equivalent and cannot be folded away; the message names the layer."""


class ExportError(ToolchainError):
    """Writing an export file failed."""


class NetxError(ToolchainError):
    """A netx file is unreadable, truncated, or uses an unsupported layer."""


class SimulationError(ToolchainError):
    """A simulation backend failed or is not available here."""


class HardwareFitError(ToolchainError):
    """The network does not fit the hardware's limits; the message names the layer and the limit."""


class ImportModelError(ToolchainError):
    """An imported model (ONNX) uses an unsupported operator or structure."""


class OutputExistsError(ToolchainError):
    """A stage was asked to write a file that exists, without overwrite=True (the CLI's --force)."""


class NotSupportedError(ToolchainError):
    """A registered entry (neuron model, input coding, hardware target, simulator) lacks the form asked for; the
    message names the entry and what it lacks."""


# -- warnings: what a Python user gets from `warnings`, and the CLI prints as one line each ------------------------
class ToolchainWarning(UserWarning):
    """Base class of the toolchain's warnings."""


class DeploymentWarning(ToolchainWarning):
    """The deployed network behaves differently from the trained one (reset mode, a saturated readout)."""


class QuantizationWarning(ToolchainWarning):
    """Quantization lost something (weights rounded to zero, biases clipped)."""


class HardwareFitWarning(ToolchainWarning):
    """The network maps onto the hardware, with a caveat (e.g. fan-out beyond a Loihi 1 figure)."""


class TrainingWarning(ToolchainWarning):
    """Training ended without improving on its start, or with no validation split to choose an epoch on."""
