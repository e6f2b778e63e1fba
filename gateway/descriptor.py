"""Envoy's descriptor set: the ``FileDescriptorSet`` its gRPC-JSON transcoder reads.

The package's build step (``setup.py``) calls :func:`build_descriptor_set` once, writing
``gateway/assets/rerank.pb``; at run time :func:`descriptor_set` returns that packaged file.
The set holds every proto under ``protos/`` with its imports (``--include_imports``) and
comments (``--include_source_info``), plus ``google/rpc/status.proto`` and
``google/rpc/error_details.proto``: the transcoder needs those two to turn a rich error
(``grpc-status-details-bin`` carrying ``google.rpc.BadRequest`` and friends) into a JSON body;
without them such errors silently degrade to an empty ``application/grpc`` reply.

This module needs only the standard library at import time, and grpcio-tools to build, so the
build step can use it from the source tree before anything is installed.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib import resources
from pathlib import Path

# Imported by none of our protos, but the transcoder needs them in its descriptor pool to
# render google.rpc.Status details as JSON.
EXTRA_PROTOS = ("google/rpc/status.proto", "google/rpc/error_details.proto")


def googleapis_include_dir() -> Path:
    """The site directory holding googleapis-common-protos' ``google/api/*.proto``."""
    spec = importlib.util.find_spec("google.api.annotations_pb2")
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).resolve().parents[2]
        if (candidate / "google/api/annotations.proto").is_file():
            return candidate
    for entry in sys.path:  # any sys.path entry that ships the .proto files
        candidate = Path(entry or ".")
        if (candidate / "google/api/annotations.proto").is_file():
            return candidate.resolve()
    raise RuntimeError("google/api/annotations.proto not found: install googleapis-common-protos")


def protoc(proto_root: Path, *args: str) -> None:
    """Runs grpc_tools' protoc in-process with ``proto_root``, googleapis and protobuf's own
    ``google/protobuf`` on the include path; raises ``RuntimeError`` if it fails."""
    from grpc_tools import protoc as grpc_protoc  # a build-time dependency only

    includes = [
        f"-I{proto_root}",
        f"-I{googleapis_include_dir()}",
        f"-I{Path(str(resources.files('grpc_tools') / '_proto'))}",
    ]
    argv = ["grpc_tools.protoc", *includes, *args]
    if grpc_protoc.main(argv) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(argv)}")


def build_descriptor_set(proto_root: Path, out: Path) -> Path:
    """Writes the descriptor set of every ``.proto`` under ``proto_root`` to ``out``."""
    protos = sorted(p.relative_to(proto_root).as_posix() for p in Path(proto_root).rglob("*.proto"))
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written under another name and renamed, so a reader never sees half a file.
    tmp = out.with_name(out.name + ".tmp")
    protoc(
        proto_root, "--include_imports", "--include_source_info", f"--descriptor_set_out={tmp}", *protos, *EXTRA_PROTOS
    )
    tmp.replace(out)
    return out


def descriptor_set() -> Path:
    """The packaged descriptor set (``gateway/assets/rerank.pb``)."""
    path = Path(str(resources.files("rerank.gateway") / "assets" / "rerank.pb"))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the package was not built (pip install -e . or make install)")
    return path


def inline_descriptor_set() -> bytes:
    """The packaged descriptor set without its source info (the proto comments, which the
    transcoder does not use): what a configuration that embeds it carries."""
    from google.protobuf import descriptor_pb2  # a runtime dependency, unlike grpc_tools

    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set().read_bytes())
    for file in files.file:
        file.ClearField("source_code_info")
    return files.SerializeToString(deterministic=True)
