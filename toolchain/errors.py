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
