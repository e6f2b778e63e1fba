"""What a request body costs before it is read: the edge's price.

The edge's check knows a body's size (its ``content-length``) and nothing else: it prices it at
a cost per byte each model learns from the requests it scores (:meth:`BodyPrice.learn`, with the
estimate from characters that admits every request: the query repeated per pair, truncation,
windows, and the script's bytes per character are all in it). The price leans low
(:data:`BODY_SHARE`): a body let through holds a place at that price and is queued on it, and a
body whose estimate then exceeds the price by far is checked again
(:data:`~rerank.service.admission.queue.MISESTIMATE`).

Before the first request the price is that of a sample request (:data:`SAMPLE_QUERY`,
:data:`SAMPLE_DOCUMENT`) as the model's own tokenizer and template size it: a constant would be
far off for some models (a decoder's prompt adds ~60 tokens to every pair; a short context
truncates every document), and the first burst of bodies is admitted at that price.
"""

from __future__ import annotations

from rerank.service.admission.queue import PADDING_ALLOWANCE

BODY_SHARE = 0.9
"""The share of a body's bytes priced at the learned cost per byte: the rest is allowance for
field names, whitespace and the like, so that the check errs toward admitting."""
LEARNING_RATE = 0.1
SAMPLE_QUERY = "how do glaciers shape the valleys they move through"
SAMPLE_DOCUMENT = (
    "A glacier moves slowly downhill under its own weight, and the rock frozen into its base "
    "scrapes the ground beneath it like coarse sandpaper. Over thousands of years this grinding "
    "turns a narrow river valley, shaped like the letter V, into a broad trough with steep walls "
    "and a flat floor, shaped like the letter U. When the ice melts it leaves behind long ridges "
    "of loose gravel and boulders, lakes in the hollows it carved, and smaller hanging valleys "
    "whose streams now fall as waterfalls into the main one."
)
SAMPLE_DOCUMENTS = 16
"""A sample request (:data:`SAMPLE_QUERY` and this many copies of :data:`SAMPLE_DOCUMENT`: English
prose, a passage of a typical retrieval chunk's size) prices a model's bodies before it has
scored any."""


class BodyPrice:
    """One model's learned price of a body's bytes, in padded tokens."""

    def __init__(self) -> None:
        self.cost_per_byte = PADDING_ALLOWANCE / 4
        """Padded tokens a byte: 4 characters a token until :meth:`learn` (which a served model
        first calls with :data:`SAMPLE_QUERY` and :data:`SAMPLE_DOCUMENT`)."""
        self.pairs_per_byte = 1 / 1000
        """Pairs a byte (documents and their windows), learned alike: the queue's size bound
        checked before a body is read."""

    def of(self, size: int) -> float:
        """The cost, in padded tokens, of a request whose body is ``size`` bytes."""
        return BODY_SHARE * size * self.cost_per_byte

    def pairs_of(self, size: int) -> float:
        """The pairs a request whose body is ``size`` bytes will queue (leaning low, as :meth:`of`)."""
        return BODY_SHARE * size * self.pairs_per_byte

    @property
    def pairs_per_cost(self) -> float:
        """Pairs a padded token of a priced body stands for: the pairs of places held at a cost."""
        return self.pairs_per_byte / self.cost_per_byte

    def learn(self, query: str, documents: list[str], cost: float, pairs: int, rate: float = LEARNING_RATE) -> None:
        """Moves the price ``rate`` of the way toward what a request of ``query`` and
        ``documents`` was estimated to cost (``cost``) and queue (``pairs``): bytes as a JSON body
        carries them, each document a string with its quotes, comma and space (documents sent as
        ``{"text": ...}`` objects take more: the price then leans low)."""
        text = len(query.encode()) + sum(len(d.encode()) + 4 for d in documents)
        if text:
            self.cost_per_byte += rate * (cost / text - self.cost_per_byte)
            self.pairs_per_byte += rate * (pairs / text - self.pairs_per_byte)
