"""The API's generated protobuf and gRPC modules.

``rerank_pb2`` / ``rerank_pb2_grpc`` come from ``protos/rerank/v1/rerank.proto``. They are
generated when the package is built (``setup.py``: ``pip install .`` or ``pip install -e .``),
never at import time; the ``.proto`` files ship beside them in ``protos/``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

try:
    from rerank.service.protocol import rerank_pb2, rerank_pb2_grpc
except ImportError as exc:  # pragma: no cover - only a checkout that was never installed
    raise ImportError(
        "rerank.service.protocol has no generated modules: install the package (pip install -e . or make install)"
    ) from exc

SERVICE_NAME: str = rerank_pb2.DESCRIPTOR.services_by_name["RerankService"].full_name


def proto_dir() -> Path:
    """The folder of the packaged ``.proto`` files (``rerank/v1/rerank.proto``, ...)."""
    return Path(str(resources.files(__name__) / "protos"))


__all__ = ["SERVICE_NAME", "proto_dir", "rerank_pb2", "rerank_pb2_grpc"]
