"""Accuracy beside speed: each peer's logits against the fp32 reference on the gate's probes.

The probes are the converter's gate set (:func:`rerank.converters.gate_probes.gate_pairs`:
~310 pairs over 10 queries, near-duplicates, long and short documents, 8 languages). The
reference is the checkpoint under transformers in fp32 (PyTorch), independent of our
converter and server. Per peer the report keeps what the gate decides on: the worst query's
Spearman correlation, how many queries keep their top 3 (same documents, same order), and the
largest |Δ logit|; ``gate`` says whether our gate would have let those scores through, so a
fast peer that reorders results reads as such.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rerank.converters import gate_probes

Probe = tuple[str, str, list[str]]
"""(group, query, documents): one query of the probe set."""


@dataclass(frozen=True)
class Accuracy:
    """A peer's figures against the reference, worst over the queries."""

    min_spearman: float
    top3_kept: int
    queries: int
    max_abs_diff: float
    gate: bool
    """Whether these scores pass our gate (every query: Spearman >= 0.99 and top 3 kept;
    max |Δ logit| <= 0.05)."""

    @classmethod
    def of(cls, reference: list[float], scores: list[float], groups: list[str]) -> Accuracy:
        report = gate_probes.gate_report(reference, scores, groups)
        kept = sum(1 for q in report["per_query"].values() if q["top3_kept"])
        return cls(
            min_spearman=report["min_spearman"],
            top3_kept=kept,
            queries=report["queries"],
            max_abs_diff=report["max_abs_diff"],
            gate=gate_probes.passes(report),
        )

    def cells(self) -> list[str]:
        """Min Spearman, top 3 kept (queries), max |Δ logit|, gate: the table's accuracy columns."""
        return [
            f"{self.min_spearman:.4f}",
            f"{self.top3_kept}/{self.queries}",
            f"{self.max_abs_diff:.3g}",
            "pass" if self.gate else "FAIL",
        ]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


NO_CELLS = ["", "", "", ""]
"""The accuracy columns of a peer that was not probed."""


def probes(per_query: int | None = None) -> list[Probe]:
    """The gate's probe set, one entry per query, in the set's order. With ``per_query``, each
    query keeps that many of its documents, spread evenly over its list (which runs through
    related documents, near-duplicates, unrelated, long, short and other-script ones), so that
    each kind stays represented in a fraction of the time (for a model that takes seconds a pair)."""
    pairs, groups = gate_probes.gate_pairs()
    out: dict[str, Probe] = {}
    for (query, document), group in zip(pairs, groups, strict=True):
        out.setdefault(group, (group, query, []))[2].append(document)
    if per_query is None:
        return list(out.values())
    return [(group, query, spread(documents, per_query)) for group, query, documents in out.values()]


def spread(items: list[str], count: int) -> list[str]:
    """``count`` of ``items``, evenly spaced from the first (all of them if there are no more)."""
    if count >= len(items):
        return list(items)
    return [items[i * len(items) // count] for i in range(count)]


def flatten(
    probe_set: list[Probe], per_query: Callable[[str, list[str]], list[float]]
) -> tuple[list[float], list[str]]:
    """``per_query(query, documents)`` for every probe, concatenated, with each score's group."""
    scores: list[float] = []
    groups: list[str] = []
    for group, query, documents in probe_set:
        got = per_query(query, documents)
        if len(got) != len(documents):
            raise ValueError(f"{len(got)} scores for {len(documents)} documents of {group}")
        scores += got
        groups += [group] * len(documents)
    return scores, groups


def reference(checkpoint: Path, probe_set: list[Probe], max_length: int = 512) -> list[float]:
    """The checkpoint's logits under transformers fp32, in :func:`flatten` order."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, dtype=torch.float32).eval()

    def score(query: str, documents: list[str]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(documents), 16):
            chunk = documents[start : start + 16]
            batch = tokenizer(
                [query] * len(chunk), chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            with torch.inference_mode():
                out += model(**batch).logits[:, 0].tolist()
        return out

    return flatten(probe_set, score)[0]
