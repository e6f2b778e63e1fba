"""What the core asks of a backend, and nothing more.

:mod:`service.core` sees only :class:`Batch` and :class:`Backend`; the concrete backends
(:mod:`service.backends.onnx`, ...) implement the protocol, and :mod:`service.backends.loader`
picks one for a model folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Batch:
    """A padded micro-batch: int64 arrays ``[pairs, longest]``, right-padded."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray | None


class Backend(Protocol):
    """Runs one model's graph on one device."""

    @property
    def provider(self) -> str:
        """Where it runs, e.g. ``CPUExecutionProvider``."""

    @property
    def precision(self) -> str:
        """``fp32``, ``bf16``, ``bf16-mixed``, ``int8`` or ``fp16``."""

    @property
    def variant_key(self) -> str:
        """The model folder's variant being run (``fp32``, ``fp32-fused``, ...)."""

    def run(self, batch: Batch) -> np.ndarray:
        """float64 logits ``[pairs]``. Blocking: called from the model's one worker thread."""

    def warm_up(self) -> None:
        """Runs a small batch once, so the first request does not pay for lazy initialisation."""


@dataclass(frozen=True)
class VariantChoice:
    """Which variant a model is served with, and why (shown in ``/v1/models``)."""

    key: str
    reason: str
    """``pinned by RERANK_VARIANT``, ``the only candidate`` or how the fastest was found."""
    milliseconds: dict[str, float]
    """Each timed candidate's best time on the start-up micro-batch (empty: nothing was timed)."""
