"""Input codings: the interface (`base`), the registry (`registry`: CODINGS), one module per coding (`poisson`,
`direct`)."""
from .base import InputCoding, InputEncoder, chip_input, integer_input
from .registry import CODINGS

__all__ = ["CODINGS", "InputCoding", "InputEncoder", "chip_input", "integer_input"]
