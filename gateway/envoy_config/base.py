"""What every part of Envoy's configuration is written in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

Json = dict[str, Any]

Descriptor = Path | bytes
"""The transcoder's descriptor set: a file Envoy reads, or its bytes, inlined (for a
configuration that must not depend on the image's file layout, e.g. a Kubernetes ConfigMap)."""


def seconds(value: float) -> str:
    """A duration as Envoy writes it: ``2.5s``."""
    return f"{value:g}s"
