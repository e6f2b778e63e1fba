"""The model's measured speed, which sizes micro-batches and prices waits."""

from __future__ import annotations


class Throughput:
    """The model's measured speed in padded tokens per second: an exponentially weighted
    average over micro-batches, so it follows the machine's load."""

    def __init__(self, tokens_per_second: float = 2000.0, weight: float = 0.2, *, measured: bool = False) -> None:
        self.tokens_per_second = tokens_per_second
        self.weight = weight
        self.measured = measured
        """Whether ``tokens_per_second`` was measured (else the first micro-batch replaces it)."""

    def record(self, tokens: int, seconds: float, full: int) -> None:
        """One micro-batch of ``tokens`` padded tokens took ``seconds``; ``full`` is the size of
        a full batch. A small batch weighs less: its speed is mostly per-call overhead, and
        letting it drag the average down would shrink the next batches in turn."""
        if seconds <= 0 or tokens <= 0:
            return
        rate = tokens / seconds
        if not self.measured:
            self.tokens_per_second, self.measured = rate, True
        else:
            weight = self.weight * min(1.0, tokens / max(1, full))
            self.tokens_per_second += weight * (rate - self.tokens_per_second)

    def seconds(self, tokens: float) -> float:
        return tokens / self.tokens_per_second
