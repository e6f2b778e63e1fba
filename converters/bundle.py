"""What a source reader hands the conversion pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from rerank.converters.spec import LoadedModel


@dataclass
class SourceBundle:
    """What :func:`rerank.converters.convert.convert` needs from a source."""

    loaded: LoadedModel
    folder: Path | None
    """The checkpoint folder (tokenizer files, reference model), when there is one."""
    tokenizer: Tokenizer | None = None
    """A tokenizer rebuilt from the source (GGUF); None means: use the folder's files."""
