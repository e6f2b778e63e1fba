"""The supported rerankers: served name -> Hub repo, GGUF repo, facts for ``--list``."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from rerank.converters.errors import SourceError
from rerank.converters.qwen3.catalog import ENTRIES as QWEN3_ENTRIES


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    hub_repo: str
    gguf_repo: str
    architecture: str
    params: str
    max_length: int
    licence: str
    notes: str = ""
    """What a first run should know (a model's download and conversion cost), for ``--list``."""


CATALOG: dict[str, CatalogEntry] = {
    e.name: e
    for e in (
        CatalogEntry(
            "bge-reranker-v2-m3",
            "BAAI/bge-reranker-v2-m3",
            "gpustack/bge-reranker-v2-m3-GGUF",
            "xlm-roberta",
            "568M",
            8192,
            "apache-2.0",
        ),
        CatalogEntry(
            "bce-reranker-base_v1",
            "maidalun1020/bce-reranker-base_v1",
            "gpustack/bce-reranker-base_v1-GGUF",
            "xlm-roberta",
            "279M",
            512,
            "apache-2.0",
        ),
        CatalogEntry(
            "jina-reranker-v1-turbo-en",
            "jinaai/jina-reranker-v1-turbo-en",
            "gpustack/jina-reranker-v1-turbo-en-GGUF",
            "jina-bert",
            "37.8M",
            8192,
            "apache-2.0",
        ),
        CatalogEntry(
            "jina-reranker-v1-tiny-en",
            "jinaai/jina-reranker-v1-tiny-en",
            "gpustack/jina-reranker-v1-tiny-en-GGUF",
            "jina-bert",
            "33.0M",
            8192,
            "apache-2.0",
        ),
        CatalogEntry(
            "jina-reranker-v2-base-multilingual",
            "jinaai/jina-reranker-v2-base-multilingual",
            "gpustack/jina-reranker-v2-base-multilingual-GGUF",
            "xlm-roberta",
            "278M",
            1024,
            "cc-by-nc-4.0",
        ),
        CatalogEntry(
            "gte-multilingual-reranker-base",
            "Alibaba-NLP/gte-multilingual-reranker-base",
            "gpustack/gte-multilingual-reranker-base-GGUF",
            "gte",
            "306M",
            8192,
            "apache-2.0",
        ),
        # Qwen3-Reranker (a decoder family: rerank.converters.qwen3)
        *(CatalogEntry(**entry) for entry in QWEN3_ENTRIES),
    )
}


def resolve(source: str) -> tuple[str, CatalogEntry | None]:
    """Maps a catalog name to its Hub repo; a Hub repo id, folder or file is returned unchanged.

    A bare name (no ``/``) that is neither in the catalog nor a local folder or ``.gguf`` file
    can only be a mistyped catalog name: :class:`SourceError`, naming the closest ones.
    """
    entry = CATALOG.get(source)
    if entry is not None:
        return entry.hub_repo, entry
    for candidate in CATALOG.values():
        if source == candidate.hub_repo:
            return source, candidate
    if "/" not in source and not source.lower().endswith(".gguf") and not Path(source).expanduser().exists():
        raise SourceError(
            f"{source!r} is neither a supported model's name{did_you_mean(source)} nor a checkpoint folder or a "
            "Hub repo id (owner/name). rerank-convert --list shows the supported models."
        )
    return source, None


def closest(source: str, n: int = 3) -> list[str]:
    """The catalog names (Hub repo ids, for a source with a ``/``) closest to ``source``, case
    aside: those it begins, then difflib's closest matches; never ``source`` itself."""
    names = [e.hub_repo if "/" in source else e.name for e in CATALOG.values()]
    by_lower = {name.lower(): name for name in names if name != source}
    query = source.lower()
    found = [lower for lower in by_lower if lower.startswith(query)]
    found += [m for m in difflib.get_close_matches(query, by_lower, n=n, cutoff=0.7) if m not in found]
    return [by_lower[m] for m in found[:n]]


def did_you_mean(source: str) -> str:
    """`` (did you mean a or b?)``, or nothing when no other name is close."""
    names = closest(source)
    return f" (did you mean {' or '.join(names)}?)" if names else ""
