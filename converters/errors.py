"""The converter's typed errors.

Library code raises them with a message that says, in one line, what is wrong and what to do;
only ``rerank-convert``'s ``main`` (:mod:`rerank.converters.cli`) turns them into an exit status and
that line.
"""

from __future__ import annotations


class ConversionError(Exception):
    """A conversion cannot go ahead, or its result did not verify. Nothing was written."""


class SourceError(ConversionError):
    """The source names nothing the converter can read: an unknown catalog name, a missing file."""


class CheckpointError(SourceError):
    """The checkpoint is not one this converter understands, or could not be fetched."""


class GgufError(SourceError):
    """The GGUF is not a reranker this converter understands."""


class InsufficientMemoryError(ConversionError):
    """The conversion would need more memory than the machine has available."""


class VerificationError(ConversionError):
    """The converted graph does not score like the reference implementation."""
