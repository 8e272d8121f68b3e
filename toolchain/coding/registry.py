"""The input-coding registry. A new coding is one module plus one line here."""
from __future__ import annotations

from ..registry import Registry
from . import direct, poisson
from .base import InputCoding

CODINGS: Registry[InputCoding] = Registry("input coding")

for _coding in (poisson.POISSON, direct.DIRECT):
    CODINGS.register(_coding)
