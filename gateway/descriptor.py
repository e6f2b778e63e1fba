"""Build the protobuf artefacts that the gateway and the Python code need.

One call to :func:`build` produces, from ``protos/rerank/v1/rerank.proto``:

``<out>/rerank.pb``
    A ``FileDescriptorSet`` for Envoy's gRPC-JSON transcoder
    (``proto_descriptor`` in ``envoy.yaml``). It is built with
    ``--include_imports --include_source_info`` and always also contains
    ``google/rpc/status.proto`` and ``google/rpc/error_details.proto``: the
    transcoder needs them to turn a rich error (``grpc-status-details-bin``
    carrying ``google.rpc.BadRequest`` and friends) into a JSON body. Without
    them such errors silently degrade to an empty ``application/grpc`` reply.

``<out>/gen/``
    Python stubs (``--python_out``, ``--grpc_python_out``, ``--pyi_out``):
    ``gen/rerank/v1/rerank_pb2.py``, ``rerank_pb2_grpc.py`` and
    ``rerank_pb2.pyi``. Put ``<out>/gen`` on ``sys.path`` to import them as
    ``rerank.v1.rerank_pb2``. Only the service's own proto is generated; the
    ``google.*`` modules come from googleapis-common-protos and protobuf
    (generating them again would register the same files twice).

protoc runs in-process through ``grpc_tools.protoc.main`` with the include
path ``protos``, the googleapis-common-protos site directory (for
``google/api/annotations.proto`` and ``google/rpc/*.proto``) and grpc_tools'
own include directory (``google/protobuf/*.proto``).

Nothing is rebuilt when every output is newer than every ``.proto`` under
``protos/`` (pass ``force=True`` or ``--force`` to rebuild anyway).

Command line, from the repository root::

    python -m gateway.descriptor [--out build] [--force]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
SERVICE_PROTO = "rerank/v1/rerank.proto"
# Imported by nothing in rerank.proto, but the transcoder needs them in the
# descriptor pool to render google.rpc.Status details as JSON.
EXTRA_PROTOS = ("google/rpc/status.proto", "google/rpc/error_details.proto")

DESCRIPTOR_NAME = "rerank.pb"
GEN_DIR_NAME = "gen"
_GEN_FILES = ("rerank/v1/rerank_pb2.py", "rerank/v1/rerank_pb2_grpc.py", "rerank/v1/rerank_pb2.pyi")


def googleapis_include_dir() -> Path:
    """The site directory holding googleapis-common-protos' ``google/api/*.proto``."""
    spec = importlib.util.find_spec("google.api.annotations_pb2")
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).resolve().parents[2]
        if (candidate / "google/api/annotations.proto").is_file():
            return candidate
    for entry in sys.path:  # fallback: any sys.path entry shipping the .proto files
        candidate = Path(entry or ".")
        if (candidate / "google/api/annotations.proto").is_file():
            return candidate.resolve()
    raise RuntimeError("google/api/annotations.proto not found: install googleapis-common-protos")


def grpc_tools_include_dir() -> Path:
    """grpc_tools' bundled ``google/protobuf/*.proto`` directory."""
    return Path(str(resources.files("grpc_tools") / "_proto")).resolve()


def descriptor_path(out_dir: Path) -> Path:
    return Path(out_dir) / DESCRIPTOR_NAME


def gen_dir(out_dir: Path) -> Path:
    return Path(out_dir) / GEN_DIR_NAME


def _outputs(out_dir: Path) -> list[Path]:
    gen = gen_dir(out_dir)
    return [descriptor_path(out_dir), *(gen / f for f in _GEN_FILES)]


def is_up_to_date(out_dir: Path) -> bool:
    """True when all outputs exist and are newer than every proto under ``protos/``."""
    outputs = _outputs(out_dir)
    if not all(p.is_file() for p in outputs):
        return False
    newest_input = max(p.stat().st_mtime for p in PROTO_ROOT.rglob("*.proto"))
    return min(p.stat().st_mtime for p in outputs) > newest_input


def _protoc(args: list[str]) -> None:
    from grpc_tools import protoc  # imported lazily: only needed when building

    includes = [
        f"-I{PROTO_ROOT}",
        f"-I{googleapis_include_dir()}",
        f"-I{grpc_tools_include_dir()}",
    ]
    argv = ["grpc_tools.protoc", *includes, *args]
    rc = protoc.main(argv)
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}: {' '.join(argv)}")


def build(out_dir: Path = Path("build"), *, force: bool = False) -> Path:
    """Build ``<out_dir>/rerank.pb`` and the stubs in ``<out_dir>/gen``.

    ``out_dir`` is taken relative to the current directory. Returns the path
    of the descriptor set. Raises ``RuntimeError`` when protoc fails (its
    messages go to stderr).
    """
    out_dir = Path(out_dir)
    pb = descriptor_path(out_dir)
    if not force and is_up_to_date(out_dir):
        return pb
    gen = gen_dir(out_dir)
    gen.mkdir(parents=True, exist_ok=True)
    # Write to a temporary name and rename, so a running Envoy or a parallel
    # reader never sees a half-written descriptor.
    tmp = pb.with_name(pb.name + ".tmp")
    _protoc(
        [
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={tmp}",
            SERVICE_PROTO,
            *EXTRA_PROTOS,
        ]
    )
    tmp.replace(pb)
    _protoc(
        [
            f"--python_out={gen}",
            f"--grpc_python_out={gen}",
            f"--pyi_out={gen}",
            SERVICE_PROTO,
        ]
    )
    return pb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.descriptor",
        description="Build build/rerank.pb (Envoy descriptor set) and build/gen/ Python stubs.",
    )
    parser.add_argument("--out", type=Path, default=Path("build"), help="output directory (default: build)")
    parser.add_argument("--force", action="store_true", help="rebuild even when outputs are up to date")
    args = parser.parse_args(argv)
    fresh = not args.force and is_up_to_date(args.out)
    pb = build(args.out, force=args.force)
    print(f"{pb} ({'up to date' if fresh else 'built'}); stubs in {gen_dir(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
