"""Counters recorded where the work happens, read by ListModels, the bench and logs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelMetrics:
    """Running totals for one model since the server started."""

    requests: int = 0
    rejected_requests: int = 0
    cancelled_requests: int = 0
    pairs: int = 0
    batches: int = 0
    padded_tokens: int = 0
    real_tokens: int = 0
    inference_seconds: float = 0.0
    queue_pairs: int = 0

    def record_batch(self, *, pairs: int, padded_tokens: int, real_tokens: int, seconds: float) -> None:
        self.batches += 1
        self.pairs += pairs
        self.padded_tokens += padded_tokens
        self.real_tokens += real_tokens
        self.inference_seconds += seconds

    @property
    def padding_fraction(self) -> float:
        """Share of the tokens fed to the model that were padding."""
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0
