"""Opens a conversion source (checkpoint folder, Hub repo, or GGUF file) as a :class:`SourceBundle`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from converters.spec import LoadedModel


@dataclass
class SourceBundle:
    """What :func:`converters.convert.convert` needs from a source."""

    loaded: LoadedModel
    folder: Path | None
    """The checkpoint folder (tokenizer files, reference model), when there is one."""
    tokenizer: Tokenizer | None = None
    """A tokenizer rebuilt from the source (GGUF); None means: use the folder's files."""


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
