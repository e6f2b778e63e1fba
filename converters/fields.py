"""Checked reading of the values a model file declares (``config.json``, GGUF metadata).

Those values come from files this converter did not write: every one is checked for its type
and range before it sizes anything, and a bad one is one :class:`~rerank.converters.errors.SourceError`
naming the file, the key and what was expected. Limits are far above any published reranker's
and far below what would exhaust memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rerank.converters.errors import SourceError

MAX_LAYERS = 1024
MAX_HIDDEN = 65_536
MAX_HEADS = 1024
MAX_INTERMEDIATE = 1_048_576
MAX_LENGTH = 131_072
"""Longest sequence a model may declare (RoPE tables are built for it)."""
MAX_VOCAB = 4_194_304

_MISSING = object()


@dataclass(frozen=True)
class Fields:
    """Typed, range-checked access to ``values``; errors are ``error_type("{where}: {key} ...")``."""

    values: Mapping[str, Any]
    where: str
    error_type: type[SourceError] = SourceError
    prefix: str = ""
    """Prepended to every key (GGUF: ``"{architecture}."``)."""
    parent: str = ""
    """Where ``values`` sits in the file, as errors show it (``rope_scaling.``)."""

    def fail(self, key: str, problem: str) -> SourceError:
        return self.error_type(f"{self.where}: {self.parent}{self.prefix}{key} {problem}")

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        value = self.values.get(self.prefix + key, default)
        if value is _MISSING:
            raise self.fail(key, "is missing")
        return value

    def _present(self, key: str, default: Any) -> Any:
        """The value, or ``default`` where it is missing or null; refuses a missing one without default."""
        value = self.raw(key, default)
        if value is None:
            if default is _MISSING or default is None:
                raise self.fail(key, "is missing")
            value = default
        return value

    def integer(self, key: str, default: Any = _MISSING, *, minimum: int = 1, maximum: int = MAX_HIDDEN) -> int:
        """An integer in [minimum, maximum]; ``null`` counts as missing."""
        value = self._present(key, default)
        if isinstance(value, np.integer):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"is {_shown(value)}; expected an integer from {minimum} to {maximum}")
        if not minimum <= value <= maximum:
            raise self.fail(key, f"is {value}; expected an integer from {minimum} to {maximum}")
        return value

    def number(
        self, key: str, default: Any = _MISSING, *, low: float = 0.0, high: float = math.inf, low_open: bool = True
    ) -> float:
        """A finite real number in (low, high] (or [low, high] with ``low_open=False``)."""
        value = self._present(key, default)
        if isinstance(value, np.generic):
            value = value.item()
        expected = f"a number {'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high < math.inf else "")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"is {_shown(value)}; expected {expected}")
        value = float(value)
        if not math.isfinite(value) or value < low or (low_open and value == low) or value > high:
            raise self.fail(key, f"is {value:g}; expected {expected}")
        return value

    def text(self, key: str, default: Any = _MISSING) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str):
            raise self.fail(key, f"is {_shown(value)}; expected a string")
        return value

    def mapping(self, key: str) -> Mapping[str, Any]:
        """An object, or an empty one where the key is missing or null."""
        value = self.raw(key, None)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(key, f"is {_shown(value)}; expected an object")
        return value

    def within(self, key: str) -> Fields:
        """The object under ``key`` (empty where missing), with keys shown as ``key.inner``."""
        return Fields(self.mapping(key), self.where, self.error_type, parent=f"{self.parent}{self.prefix}{key}.")


def heads_divide(fields: Fields, hidden: int, heads: int, heads_key: str) -> None:
    """Attention heads split the hidden size evenly: refuses a count that does not."""
    if heads > hidden or hidden % heads:
        raise fields.fail(heads_key, f"is {heads}, which does not divide the hidden size {hidden}")


def shape_text(value: np.ndarray | tuple[int, ...] | None) -> str:
    """A weight's shape as an error message shows it (``[3, 64]``, or ``missing``)."""
    if value is None:
        return "missing"
    shape = value if isinstance(value, tuple) else value.shape
    return "[" + ", ".join(map(str, shape)) + "]"


def _shown(value: Any) -> str:
    """A value as an error message shows it: its type, and a short prefix of it."""
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"
