"""The six supported rerankers: served name -> Hub repo, GGUF repo, facts for ``--list``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    hub_repo: str
    gguf_repo: str
    architecture: str
    params: str
    max_length: int
    licence: str


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
    )
}


def resolve(source: str) -> tuple[str, CatalogEntry | None]:
    """Maps a catalog name to its Hub repo; anything else is returned unchanged."""
    entry = CATALOG.get(source)
    if entry is not None:
        return entry.hub_repo, entry
    for candidate in CATALOG.values():
        if source == candidate.hub_repo:
            return source, candidate
    return source, None
