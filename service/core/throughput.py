"""The model's measured speed, which sizes micro-batches and prices waits."""

from __future__ import annotations


class Throughput:
    """The model's measured speed in padded tokens per second, from an exponentially weighted
    average over micro-batches of the seconds each token took, so it follows the machine's load.

    Seconds a token, not tokens a second: what admission asks is how long a queue of tokens
    takes, and when batch speeds vary (a batch slowed by Envoy, the event loop or tokenizing
    taking a core from inference, which runs at a lower priority) the average of their speeds
    runs ahead of the speed the queue drains at, the mean of the times being what adds up
    (measured in docs/performance.md#overload)."""

    def __init__(self, tokens_per_second: float = 2000.0, weight: float = 0.2, *, measured: bool = False) -> None:
        self.seconds_per_token = 1.0 / tokens_per_second
        self.weight = weight
        self.measured = measured
        """Whether the speed was measured (else the first micro-batch replaces it)."""

    @property
    def tokens_per_second(self) -> float:
        return 1.0 / self.seconds_per_token

    def record(self, tokens: int, seconds: float, full: int) -> None:
        """One micro-batch of ``tokens`` padded tokens took ``seconds``; ``full`` is the size of
        a full batch. A small batch weighs less: its speed is mostly per-call overhead, and
        letting it drag the average down would shrink the next batches in turn."""
        if seconds <= 0 or tokens <= 0:
            return
        cost = seconds / tokens
        if not self.measured:
            self.seconds_per_token, self.measured = cost, True
        else:
            weight = self.weight * min(1.0, tokens / max(1, full))
            self.seconds_per_token += weight * (cost - self.seconds_per_token)

    def seconds(self, tokens: float) -> float:
        return tokens * self.seconds_per_token
