"""Opens a conversion source (checkpoint folder, Hub repo, or GGUF file) as a :class:`SourceBundle`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from converters.bundle import SourceBundle


def load_source(source: str, progress: Callable[[str], None] = print) -> SourceBundle:
    if source.lower().endswith(".gguf"):
        from converters.gguf_source import load_gguf_bundle

        progress(f"gguf: reading {source}")
        return load_gguf_bundle(Path(source), progress=progress)
    from converters.hf_checkpoint import fetch, load_checkpoint

    folder = fetch(source)
    progress(f"checkpoint: reading weights from {folder}")
    loaded = load_checkpoint(str(folder))
    if str(folder) != source:
        loaded.source = source
    return SourceBundle(loaded=loaded, folder=folder)
