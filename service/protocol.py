"""The generated protobuf and gRPC modules for ``protos/rerank/v1/rerank.proto``.

They are generated at build time into ``build/gen`` (``make proto``, or
``python -m gateway.descriptor``); when missing and ``grpcio-tools`` is installed, they are
generated on first import.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GEN = ROOT / "build" / "gen"

if not (GEN / "rerank" / "v1" / "rerank_pb2_grpc.py").exists():
    try:
        from gateway.descriptor import build
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(f"{GEN} has no generated stubs; run `make proto` first") from exc
    build(ROOT / "build")

if str(GEN) not in sys.path:
    sys.path.insert(0, str(GEN))

from rerank.v1 import rerank_pb2, rerank_pb2_grpc  # noqa: E402

SERVICE_NAME = rerank_pb2.DESCRIPTOR.services_by_name["RerankService"].full_name

__all__ = ["rerank_pb2", "rerank_pb2_grpc", "SERVICE_NAME"]
