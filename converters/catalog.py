"""The supported rerankers: served name -> Hub repo, GGUF repo, facts for ``--list``.

Each family declares its own entries (:attr:`rerank.converters.families.base.ModelFamily.catalog`).
"""

from __future__ import annotations

import difflib
from pathlib import Path

from rerank.converters.errors import SourceError
from rerank.converters.families import catalog_entries
from rerank.converters.families.base import CatalogEntry

CATALOG: dict[str, CatalogEntry] = {e.name: e for e in catalog_entries()}
"""Every family's published models (:mod:`rerank.converters.families`), by served name."""


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
