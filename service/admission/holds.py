"""The places the edge's check holds for bodies on their way, and the proof that it charged them.

When the check (:mod:`rerank.service.router.edge`) admits a rerank request before its body is
read, it charges the request to its API key and, where it priced the body, holds the body's cost
on every model with room (it cannot know which model the body names). The token it returns is
the request's :data:`~rerank.service.admission.contract.HOLD_HEADER`. Every admission on this
replica counts the places held as queued work, so a burst of large bodies checked together is
admitted as far as there is room and refused, before its bodies are read, beyond it.

A token is unforgeable and proves nothing beyond what it was placed for:

* it is random (128 bits) and known only to this process's table: a token this replica did not
  place (forged, or another replica's) proves nothing;
* it is bound to the key it was charged to: presented with another key it proves nothing;
* it is bound to the price it was admitted at: the call queues on it only if its own estimate is
  within :data:`~rerank.service.admission.queue.MISESTIMATE` of what was held, else it meets the
  queue's check like any call;
* it is taken once: a replayed token proves nothing;
* its place lapses after :data:`HOLD_SECONDS` (a body that never comes blocks no longer); the
  token still proves the charge for :data:`MEMORY_SECONDS`, so a slow upload is not charged twice.

Used on the event loop only (the check and the batchers share it there).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

HOLD_SECONDS = 1.0
"""How long a place is held for a body on its way: an upload, Envoy's transcoding and the call
take milliseconds on a local network; a place whose body never comes blocks no longer."""
MEMORY_SECONDS = 60.0
"""How long a token still proves that its request was charged once its place lapsed (longer than
Envoy gives a client to send a whole request)."""
MAX_TOKENS = 100_000
"""Tokens remembered at most; past it the oldest are forgotten first."""
OUTCOMES = ("placed", "taken", "lapsed", "late", "invalid")
"""What happens to tokens (``rerank_early_holds_total``): placed; taken by their call while held;
lapsed before it came; late (taken after lapsing: its call is checked again); invalid (a token
this replica never placed, already taken, forgotten, or presented with another key)."""


@dataclass
class _Token:
    key: str
    costs: dict[str, float]
    lapses: float
    forgotten: float


@dataclass(frozen=True)
class Claim:
    """What a call's token proves: its request was charged to its key at the edge, and the places
    still held for it, by model (empty once lapsed, or where nothing was priced)."""

    costs: Mapping[str, float]


class Holds:
    """The tokens this replica placed, in the order placed (which is the order they lapse in)."""

    def __init__(
        self,
        *,
        seconds: float = HOLD_SECONDS,
        memory: float = MEMORY_SECONDS,
        limit: int = MAX_TOKENS,
        clock: Callable[[], float] = time.monotonic,
        record: Callable[[str], None] | None = None,
    ) -> None:
        self.seconds = seconds
        self.memory = memory
        self.limit = limit
        self._clock = clock
        self._record = record or (lambda outcome: None)
        self._held: dict[str, _Token] = {}
        self._lapsed: dict[str, _Token] = {}

    def place(self, key: str, costs: Mapping[str, float]) -> str:
        """Holds ``costs`` (by model) for :attr:`seconds` for a request charged to ``key`` (an
        opaque identity; '' without keys); returns the token that claims them."""
        self.expire()
        token = secrets.token_urlsafe(16)
        now = self._clock()
        self._held[token] = _Token(key, dict(costs), now + self.seconds, now + self.seconds + self.memory)
        while len(self._held) + len(self._lapsed) > self.limit:
            self._forget_oldest()
        self._record("placed")
        return token

    def costs(self, model: str) -> list[float]:
        """The costs held on ``model`` now."""
        self.expire()
        return [t.costs[model] for t in self._held.values() if model in t.costs]

    def claim(self, token: str, key: str) -> Claim | None:
        """What ``token`` proves for a call with ``key``, taken (once); None when it proves
        nothing (never placed here, taken already, forgotten, or placed for another key)."""
        self.expire()
        for table, outcome in ((self._held, "taken"), (self._lapsed, "late")):
            found = table.get(token)
            if found is not None and secrets.compare_digest(found.key, key):
                del table[token]
                self._record(outcome)
                return Claim(found.costs if outcome == "taken" else {})
        self._record("invalid")
        return None

    def expire(self) -> None:
        """Lets the places whose time is up go (counted as lapsed), and forgets old tokens."""
        now = self._clock()
        while self._held:
            token, first = next(iter(self._held.items()))
            if first.lapses > now:
                break
            del self._held[token]
            self._lapsed[token] = first
            self._record("lapsed")
        while self._lapsed:
            token, first = next(iter(self._lapsed.items()))
            if first.forgotten > now:
                break
            del self._lapsed[token]

    def _forget_oldest(self) -> None:
        table = self._lapsed or self._held
        del table[next(iter(table))]
