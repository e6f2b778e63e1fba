"""The three workloads, as deterministic synthetic English text.

Text is drawn from a seeded generator over the English word list the fixture tokenizers were
trained on (:data:`rerank.converters.testing.corpus.LANGUAGES`), so it tokenizes at a realistic ~1.3 tokens
per word instead of falling apart into characters.

=====  ==========================================  ========================================
name   requests                                    measures
=====  ==========================================  ========================================
W1     1 query x 64 documents of ~150 words        throughput of one large request
W2     W1 sent by 8 concurrent clients             throughput and tail latency under load
W3     1 query x 8 documents of ~12 words          latency of a small request
=====  ==========================================  ========================================

Every request measured asks a query of its own (:func:`query`), the documents staying the same:
a server that keeps prompts across requests (vLLM's prefix cache, llama-server's prompt cache)
would otherwise answer a repeated request from what it kept of the last one, which no real
traffic of distinct queries lets it do.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rerank.converters.testing.corpus import LANGUAGES

WORKLOADS = ("W1", "W2", "W3")
SEED = 1234


@dataclass(frozen=True)
class Workload:
    """One request shape and how many clients send it at once."""

    name: str
    query: str
    documents: tuple[str, ...]
    clients: int

    @property
    def pairs(self) -> int:
        """(query, document) pairs in one request."""
        return len(self.documents)


def _text(rng: random.Random, words: int) -> str:
    """``words`` words as capitalised sentences of 6-20 words with commas here and there."""
    vocabulary = LANGUAGES["en"]
    sentences: list[str] = []
    left = words
    while left > 0:
        n = min(left, rng.randint(6, 20))
        sentence = [rng.choice(vocabulary) for _ in range(n)]
        if n > 8:
            sentence[rng.randint(3, n - 4)] += ","
        sentences.append(" ".join(sentence).capitalize() + ".")
        left -= n
    return " ".join(sentences)


def _query(rng: random.Random) -> str:
    """A question of 9 words."""
    return _text(rng, 9).rstrip(".") + "?"


def texts(seed: str, count: int, words: int) -> tuple[str, tuple[str, ...]]:
    """A query of 9 words and ``count`` documents of ``words`` words ± 10 %, from the generator
    seeded with ``seed`` (the same text for the same arguments; ``bench.overload``'s requests)."""
    rng = random.Random(f"{SEED}/{seed}")
    query = _query(rng)
    spread = max(1, words // 10)
    return query, tuple(_text(rng, rng.randint(words - spread, words + spread)) for _ in range(count))


def make(name: str) -> Workload:
    """The workload ``name`` (W1, W2 or W3); the same text on every call."""
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; expected one of {WORKLOADS}")
    small = name == "W3"
    rng = random.Random(f"{SEED}/{'W3' if small else 'W1'}")  # W2 sends W1's exact request
    query = _query(rng)
    lengths = [rng.randint(8, 16) if small else rng.randint(135, 165) for _ in range(8 if small else 64)]
    return Workload(name, query, tuple(_text(rng, n) for n in lengths), clients=8 if name == "W2" else 1)


def query(workload: Workload, n: int) -> str:
    """The query of the ``n``-th request measured with ``workload`` (0: its own
    :attr:`Workload.query`, which warm-ups ask): 9 words like it, drawn for ``n``."""
    if n == 0:
        return workload.query
    return _query(random.Random(f"{SEED}/{workload.name}/query/{n}"))
