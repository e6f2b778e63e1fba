"""Server settings: defaults, overridden by ``RERANK_*`` environment variables, then by flags."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from service.core.batching import BatchingConfig


@dataclass(frozen=True)
class Limits:
    """Per-request limits; going over one is RESOURCE_EXHAUSTED (HTTP 429/413)."""

    max_documents: int = 1000
    max_request_bytes: int = 4 * 1024 * 1024
    """Largest gRPC request message; Envoy's body limit in envoy.yaml matches it."""


@dataclass(frozen=True)
class Settings:
    models_dir: Path = Path("models")
    host: str = "0.0.0.0"
    port: int = 50051
    api_keys: tuple[str, ...] = ()
    api_keys_file: Path | None = None
    insecure_no_auth: bool = False
    variant: str | None = None
    """Force a graph variant (fp32, fp32-fused, int8, fp16) instead of the best for the device."""
    device: str | None = None
    """``cpu`` or ``cuda``; default: cuda when ONNX Runtime sees a GPU."""
    threads: int | None = None
    """ONNX Runtime intra-op threads; default: all cores."""
    tokenizer_threads: int = 2
    grace_seconds: float = 10.0
    limits: Limits = field(default_factory=Limits)
    batching: BatchingConfig = field(default_factory=BatchingConfig)


def _env_int(name: str, default: int | None) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def parse(argv: list[str] | None = None) -> Settings:
    """Builds :class:`Settings` from the environment and ``argv``."""
    env = os.environ
    p = argparse.ArgumentParser(prog="rerank-serve", description="Serve cross-encoder rerankers over gRPC.")
    p.add_argument("--models-dir", type=Path, default=Path(env.get("RERANK_MODELS_DIR", "models")),
                   help="folder of model folders written by rerank-convert (RERANK_MODELS_DIR)")
    p.add_argument("--host", default=env.get("RERANK_HOST", "0.0.0.0"))
    p.add_argument("--port", type=int, default=_env_int("RERANK_GRPC_PORT", 50051))
    p.add_argument("--api-keys-file", type=Path, default=env.get("RERANK_API_KEYS_FILE") or None,
                   help="file of SHA-256 hex digests of accepted keys, one per line (RERANK_API_KEYS_FILE)")
    p.add_argument("--insecure-no-auth", action="store_true", default=env.get("RERANK_INSECURE_NO_AUTH") == "1",
                   help="serve without API keys (never in production)")
    p.add_argument("--variant", default=env.get("RERANK_VARIANT") or None)
    p.add_argument("--device", choices=("cpu", "cuda"), default=env.get("RERANK_DEVICE") or None)
    p.add_argument("--threads", type=int, default=_env_int("RERANK_THREADS", None))
    p.add_argument("--max-documents", type=int, default=_env_int("RERANK_MAX_DOCUMENTS", Limits.max_documents))
    p.add_argument("--max-request-bytes", type=int, default=_env_int("RERANK_MAX_REQUEST_BYTES", Limits.max_request_bytes))
    p.add_argument("--max-batch-tokens", type=int, default=_env_int("RERANK_MAX_BATCH_TOKENS", BatchingConfig.max_batch_tokens))
    p.add_argument("--max-batch-pairs", type=int, default=_env_int("RERANK_MAX_BATCH_PAIRS", BatchingConfig.max_batch_pairs))
    p.add_argument("--max-queue-pairs", type=int, default=_env_int("RERANK_MAX_QUEUE_PAIRS", BatchingConfig.max_queue_pairs))
    a = p.parse_args(argv)
    # Keys are read from the environment only: a flag would show them in `ps`.
    keys = tuple(k.strip() for k in env.get("RERANK_API_KEYS", "").split(",") if k.strip())
    for name in ("max_documents", "max_request_bytes", "max_batch_tokens", "max_batch_pairs", "max_queue_pairs"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return Settings(
        models_dir=a.models_dir, host=a.host, port=a.port, api_keys=keys, api_keys_file=a.api_keys_file,
        insecure_no_auth=a.insecure_no_auth, variant=a.variant, device=a.device, threads=a.threads,
        limits=Limits(a.max_documents, a.max_request_bytes),
        batching=BatchingConfig(a.max_batch_tokens, a.max_batch_pairs, a.max_queue_pairs),
    )


__all__ = ["Settings", "Limits", "parse"]
