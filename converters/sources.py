"""Opens a conversion source (checkpoint folder, Hub repo, or GGUF file) as a :class:`SourceBundle`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rerank.converters.bundle import SourceBundle
from rerank.converters.memory import check_fits


def load_source(source: str, progress: Callable[[str], None] = print, *, check_memory: bool = True) -> SourceBundle:
    """Reads ``source`` (a Hub repo is downloaded first).

    ``check_memory``: before any weights are read, refuse a conversion whose estimated peak
    memory exceeds what is available (:func:`rerank.converters.memory.check_fits`).
    """
    if source.lower().endswith(".gguf"):
        from rerank.converters.gguf_file import GgufFile
        from rerank.converters.gguf_source import load_gguf_bundle

        progress(f"gguf: reading {source}")
        gguf = GgufFile.open(Path(source))
        if check_memory:
            check_fits(gguf.parameter_count(), progress)
        return load_gguf_bundle(gguf, progress=progress)
    from rerank.converters.hf_checkpoint import count_parameters, fetch, load_checkpoint

    folder = fetch(source)
    if check_memory:
        check_fits(count_parameters(folder), progress)
    progress(f"checkpoint: reading weights from {folder}")
    loaded = load_checkpoint(str(folder))
    if str(folder) != source:
        loaded.source = source
    return SourceBundle(loaded=loaded, folder=folder)
