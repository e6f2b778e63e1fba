"""What a request body costs before it is read: the edge's price.

The edge's check knows a body's size (its ``content-length``) and nothing else: it prices it at
a cost per byte each model learns from the requests it scores (:meth:`BodyPrice.learn`, with the
estimate from characters that admits every request: the query repeated per pair, truncation,
windows, and the script's bytes per character are all in it). The price leans low
(:data:`BODY_SHARE`): a body let through holds a place at that price and is queued on it, and a
body whose estimate then exceeds the price by far is checked again
(:data:`~rerank.service.admission.queue.MISESTIMATE`).
"""

from __future__ import annotations

from rerank.service.admission.queue import PADDING_ALLOWANCE

BODY_SHARE = 0.9
"""The share of a body's bytes priced at the learned cost per byte: the rest is allowance for
field names, whitespace and the like, so that the check errs toward admitting."""
CHARACTERS_PER_TOKEN = 4.0
"""Where the learned cost per byte starts, before any request was scored."""
LEARNING_RATE = 0.1


class BodyPrice:
    """One model's learned price of a body's bytes, in padded tokens."""

    def __init__(self) -> None:
        self.cost_per_byte = PADDING_ALLOWANCE / CHARACTERS_PER_TOKEN

    def of(self, size: int) -> float:
        """The cost, in padded tokens, of a request whose body is ``size`` bytes."""
        return BODY_SHARE * size * self.cost_per_byte

    def learn(self, query: str, documents: list[str], cost: float) -> None:
        """Moves the price toward what a request of ``query`` and ``documents`` was estimated to
        cost (``cost``): bytes as a JSON body carries them, each document a string with its
        quotes, comma and space (documents sent as ``{"text": ...}`` objects take more: the price
        then leans low)."""
        text = len(query.encode()) + sum(len(d.encode()) + 4 for d in documents)
        if text:
            self.cost_per_byte += LEARNING_RATE * (cost / text - self.cost_per_byte)
