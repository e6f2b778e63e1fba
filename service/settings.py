"""Every setting, declared once.

:class:`Settings` is the table: each field is one setting, with its type (the annotation), its
default, its help, its environment variable (``RERANK_<NAME>``) and its flag (``--<name>``), and
the commands that take it (``serve``: ``rerank-serve``; ``stack``: ``rerank-stack``; ``gateway``:
Envoy's rendered configuration). :func:`parse` builds a command's parser from the table
(defaults, overridden by the environment, overridden by flags), the stack hands its replicas
their settings through :meth:`Settings.to_env`, Envoy's configuration is rendered from the same
object, and ``python -m rerank.service.settings`` prints the configuration table of docs/configuration.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

Role = Literal["serve", "stack", "gateway"]
SERVE: frozenset[Role] = frozenset({"serve", "stack"})
"""Settings of the gRPC service; the stack takes them too and hands them to its replicas."""
STACK: frozenset[Role] = frozenset({"stack"})
GATEWAY: frozenset[Role] = frozenset({"stack", "gateway"})
"""Settings that shape Envoy's rendered configuration."""
ALL: frozenset[Role] = frozenset({"serve", "stack", "gateway"})

ENV_PREFIX = "RERANK_"


def setting(
    default: Any,
    help: str,
    *,
    roles: frozenset[Role] = SERVE,
    env: str | None = None,
    flag: str | None = None,
    secret: bool = False,
    choices: Sequence[str] | None = None,
    minimum: float | None = None,
) -> Any:
    """Declares one field of :class:`Settings`.

    ``secret``: read from the environment only, never a flag (``ps`` would show it) and never
    printed. ``minimum``: the smallest accepted value of a number.
    """
    meta = {
        "help": help,
        "roles": roles,
        "env": env,
        "flag": flag,
        "secret": secret,
        "choices": choices,
        "minimum": minimum,
    }
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults are not settings")
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """The whole configuration of one process. Field order is the order of the documented table."""

    # --- models and inference ---------------------------------------------------------------
    models_dir: Path = setting(
        Path("models"),
        "Folder of model folders written by rerank-convert; each subfolder with a rerank.json is served.",
    )
    variant: str | None = setting(
        None,
        "Graph variant to serve (fp32, fp32-fused, int8, fp16, ov-fp32, ov-bf16, ov-bf16-split, ov-bf16-mixed, "
        "ov-int8-dynamic, ov-int8; fp32 gives the exact scores); default: on CUDA fp16, on the CPU the fastest, "
        "timed at start-up, of the variants that are exact or passed their gate and that the CPU runs natively.",
    )
    device: str | None = setting(
        None, "cpu or cuda; default: cuda when ONNX Runtime sees a GPU.", choices=("cpu", "cuda")
    )
    threads: int | None = setting(
        None,
        "Inference threads per process (ONNX Runtime intra-op, OpenVINO); default: the cores (divided between "
        "replicas by rerank-stack).",
        minimum=1,
    )
    streams: int | None = setting(
        None,
        "Micro-batches a model on the CPU (OpenVINO) runs at once, each on threads/streams threads; default: 2 "
        "(at most the threads). ONNX Runtime and CUDA run one at a time.",
        minimum=1,
    )
    inference_nice: int = setting(
        10,
        "Niceness added to inference threads (the runtime's pools and the threads that call it), so the event loop "
        "answering admission checks, health and I/O is not queued behind inference on saturated cores; 0: same "
        "priority as the rest.",
        minimum=0,
    )
    tokenizer_threads: int = setting(2, "Threads that tokenize requests.", minimum=1)
    verify_checksums: bool = setting(
        True,
        "At start-up, check the SHA-256 of the model files against the converter's record (seconds for GB).",
    )
    default_model: str = setting(
        "",
        "Model served to requests that name none (every face; TEI's API never names one); default: the only model, "
        "when one is served.",
    )
    # --- limits and batching ----------------------------------------------------------------
    max_documents: int = setting(1000, "Documents per request.", minimum=1)
    max_request_bytes: int = setting(
        4 * 1024 * 1024, "Largest request: the gRPC message limit and Envoy's body limit.", roles=ALL, minimum=1024
    )
    max_input_length: int | None = setting(
        None,
        "Most tokens a pair is read in (query, document and template), below each model's own max_length; longer "
        "documents follow the request's long_documents rule. A pair's memory grows with its length: bound it on a "
        "small host (docs/operating.md, Long pairs). Default: each model's own.",
        minimum=32,
    )
    max_batch_tokens: int = setting(8192, "Padded tokens per micro-batch (longest sequence x pairs).", minimum=1)
    max_batch_pairs: int = setting(64, "Pairs per micro-batch.", minimum=1)
    batch_tokens: int | None = setting(
        None,
        "Padded tokens a micro-batch is cut at for speed (within the two limits above); default: the size that "
        "ran fastest when timed at start-up (on a CPU a few thousand tokens: bigger batches outgrow the caches).",
        minimum=1,
    )
    max_queue_pairs: int = setting(8192, "Queued pairs before new requests are refused (429).", minimum=1)
    max_queue_seconds: float = setting(
        5.0,
        "Longest estimated wait a request is admitted with; above it, 429 at once with Retry-After. Keep it "
        "well under Envoy's route timeout.",
        minimum=0.01,
    )
    batch_seconds: float = setting(
        0.25,
        "Target duration of one micro-batch (by the measured speed of the model): how long a new request may wait "
        "for the batch in flight.",
        minimum=0.01,
    )
    max_query_chars: int = setting(
        16384, "Longest query in characters; longer is refused at once (400), before tokenizing.", minimum=1
    )
    max_document_chars: int = setting(
        200_000, "Longest document in characters; longer is refused at once (400), before tokenizing.", minimum=1
    )
    tokenizer_queue: int = setting(16, "Requests tokenizing or waiting to; more are refused at once (429).", minimum=1)
    stall_seconds: float = setting(
        3.0,
        "Watchdog: a micro-batch running this long past its expected end (and 4x its expected time), or a request "
        "waiting this long past the queue's bound for its first micro-batch, reports the replica NOT_SERVING; a "
        "stuck micro-batch's requests get 503 (Envoy retries them on another replica).",
        minimum=0.1,
    )
    # --- network ----------------------------------------------------------------------------
    grpc_host: str = setting(
        "127.0.0.1", "Address the gRPC service binds. Behind Envoy it stays on loopback; 0.0.0.0 exposes it directly."
    )
    grpc_port: int = setting(
        50051, "gRPC port (with --replicas N, the first of N consecutive ports).", roles=ALL, minimum=0
    )
    rest_host: str = setting("0.0.0.0", "Address Envoy's REST and gRPC listener binds.", roles=GATEWAY)
    rest_port: int = setting(8080, "Envoy's listener: REST (JSON) and gRPC on one port.", roles=GATEWAY, minimum=0)
    admin_port: int = setting(
        9901, "Envoy's admin port (loopback only).", roles=GATEWAY, minimum=0, env="RERANK_ENVOY_ADMIN_PORT"
    )
    upstreams: str = setting(
        "",
        "Envoy alone: the service endpoints, host:port[,host:port...]; a DNS name "
        "is re-resolved (a Kubernetes headless Service). Default: the stack's replicas.",
        roles=frozenset({"gateway"}),
    )
    route_timeout: float = setting(60.0, "Envoy's timeout for one request, in seconds.", roles=GATEWAY, minimum=1)
    headers_timeout: float = setting(
        10.0, "Seconds a client has to send a request's headers; a slower one is cut off.", roles=GATEWAY, minimum=0.1
    )
    request_timeout: float = setting(
        30.0, "Seconds a client has to send a whole request, body included.", roles=GATEWAY, minimum=0.1
    )
    idle_timeout: float = setting(120.0, "Seconds an idle client connection stays open.", roles=GATEWAY, minimum=1)
    max_streams_per_connection: int = setting(
        100, "Concurrent HTTP/2 streams (requests) one client connection may have.", roles=GATEWAY, minimum=1
    )
    max_header_kb: int = setting(
        16, "Largest request headers Envoy accepts, in KiB; more is 431.", roles=GATEWAY, minimum=1
    )
    # --- TLS ---------------------------------------------------------------------------------
    tls_cert: Path | None = setting(
        None,
        "PEM certificate chain for Envoy's listener: REST and gRPC over TLS 1.2+ (with RERANK_TLS_KEY).",
        roles=GATEWAY,
    )
    tls_key: Path | None = setting(None, "PEM private key of RERANK_TLS_CERT.", roles=GATEWAY)
    tls_client_ca: Path | None = setting(
        None, "PEM CA bundle: Envoy then requires client certificates signed by it (mutual TLS).", roles=GATEWAY
    )
    grpc_tls_cert: Path | None = setting(
        None,
        "PEM certificate chain for the service's own gRPC port, for direct clients (with RERANK_GRPC_TLS_KEY).",
    )
    grpc_tls_key: Path | None = setting(None, "PEM private key of RERANK_GRPC_TLS_CERT.")
    grpc_tls_client_ca: Path | None = setting(
        None, "PEM CA bundle: the service's port then requires client certificates signed by it."
    )
    upstream_tls_ca: Path | None = setting(
        None,
        "PEM CA bundle Envoy verifies the services' certificates with; set it when they serve TLS "
        "(RERANK_GRPC_TLS_CERT): Envoy then speaks TLS to them.",
        roles=GATEWAY,
    )
    # --- processes --------------------------------------------------------------------------
    replicas: int = setting(1, "Service processes behind Envoy.", roles=STACK, minimum=1)
    grace_period: float = setting(
        10.0, "Seconds a stopping process lets in-flight requests finish.", roles=ALL, minimum=0
    )
    drain_delay: float = setting(
        3.0,
        "After SIGTERM, seconds a replica keeps serving while it reports NOT_SERVING, so Envoy's health checks "
        "move traffic away first (keep it above 2 health-check intervals).",
        roles=ALL,
        minimum=0,
    )
    health_check_interval: float = setting(
        1.0, "Seconds between Envoy's gRPC health checks of each replica.", roles=GATEWAY, minimum=0.1
    )
    state_dir: Path = setting(
        Path(".rerank"), "Runtime state: the generated API key, the rendered Envoy configuration, logs.", roles=ALL
    )
    # --- authentication ---------------------------------------------------------------------
    api_keys: tuple[str, ...] = setting((), "Accepted API keys, comma-separated (environment only).", secret=True)
    api_keys_file: Path | None = setting(None, "File of SHA-256 hex digests of accepted keys, one per line.")
    insecure_no_auth: bool = setting(False, "Serve without API keys (never in production).")
    limits_store: str = setting(
        "",
        "Where per-key limits (rps, tpm) are counted, so that they hold for every process that serves a key: empty "
        "for this process alone; a SQLite file that the processes of one host share (rerank-stack's default: "
        "<state dir>/limits.sqlite); redis://host:port/db for several hosts (the limits extra).",
    )
    # --- replicas (rerank-stack sets these for each replica) -------------------------------
    replica_address: str = setting(
        "",
        "host:port by which Envoy reaches this replica: a body the edge's check admitted is pinned to the replica "
        "that holds its place. Empty: not pinned.",
    )
    peers: str = setting(
        "",
        "host:port[,host:port...] of the other replicas behind the same Envoy: a body this replica has no room for "
        "is asked of one of them before it is refused (needs RERANK_PEER_SECRET).",
    )
    peer_secret: str = setting(
        "", "Secret the replicas of one stack share to ask each other for room (environment only).", secret=True
    )
    # --- metrics, logs, traces --------------------------------------------------------------
    metrics_port: int = setting(
        0,
        "Prometheus metrics (HTTP GET /metrics) of the service, on the gRPC host; with --replicas N, the first of N "
        "consecutive ports. 0: a free port chosen at start (rerank-stack picks them outside the kernel's range for "
        "outgoing connections, so a restarted replica gets its own back, and routes GET /metrics through Envoy to "
        "them); set it to scrape the service directly.",
        roles=ALL,
        minimum=0,
    )
    metrics_require_key: bool = setting(
        True,
        "GET /metrics needs an API key (Authorization: Bearer), through Envoy and on the metrics port alike; false "
        "opens it to anyone who reaches it (per-key series included: then keep the metrics port private).",
    )
    metrics_dir: Path | None = setting(
        None,
        "Folder where the processes of one host pool their metrics (prometheus_client's multiprocess mode), so that "
        "any of them serves the sum; rerank-stack sets it to <state dir>/metrics. Unset: a process reports itself.",
        roles=frozenset({"serve"}),
        env="PROMETHEUS_MULTIPROC_DIR",
    )
    log_level: str = setting("info", "Log level.", roles=ALL, choices=("debug", "info", "warning", "error"))
    log_format: str = setting(
        "text",
        "Log lines as text, or as one JSON object each (with the request id of the call they belong to).",
        roles=ALL,
        choices=("text", "json"),
    )
    otlp_endpoint: str | None = setting(
        None,
        "OpenTelemetry traces: the OTLP/gRPC collector to export spans to (e.g. http://otel-collector:4317); "
        "needs the tracing extra (pip install 'rerank[tracing]'). Unset: no tracing.",
    )

    def __post_init__(self) -> None:
        for cert, key, client_ca, env in (
            (self.tls_cert, self.tls_key, self.tls_client_ca, "RERANK_TLS"),
            (self.grpc_tls_cert, self.grpc_tls_key, self.grpc_tls_client_ca, "RERANK_GRPC_TLS"),
        ):
            if (cert is None) != (key is None):
                raise SettingsError(f"{env}_CERT and {env}_KEY go together: set both or neither")
            if client_ca is not None and cert is None:
                raise SettingsError(f"{env}_CLIENT_CA needs {env}_CERT and {env}_KEY: client certificates need TLS")

    def to_env(self, role: Role = "serve") -> dict[str, str]:
        """The settings of ``role`` as environment variables: how the stack configures its
        children (secrets included: the environment is where they come from)."""
        env: dict[str, str] = {}
        for f in dataclasses.fields(self):
            if role in f.metadata["roles"]:
                value = getattr(self, f.name)
                if value is not None:
                    env[env_name(f)] = _format(value)
        return env


# --------------------------------------------------------------------------------- parsing


class SettingsError(ValueError):
    """A setting has a value it cannot take; the message names the setting."""


def env_name(f: dataclasses.Field[Any]) -> str:
    return f.metadata["env"] or ENV_PREFIX + f.name.upper()


def flag_name(f: dataclasses.Field[Any]) -> str:
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def _fields(role: Role) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(Settings) if role in f.metadata["roles"]]


_HINTS = get_type_hints(Settings)


def _base_type(name: str) -> tuple[Any, bool]:
    """The annotation of ``name`` without ``| None``, and whether None is allowed."""
    hint = _HINTS[name]
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


def _convert(f: dataclasses.Field[Any], text: str) -> Any:
    base, optional = _base_type(f.name)
    text = text.strip()
    if optional and text == "":
        return None
    try:
        if base is bool:
            lowered = text.lower()
            if lowered not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError(f"not a boolean: {text!r}")
            value: Any = lowered in ("1", "true", "yes", "on")
        elif get_origin(base) is tuple:
            value = tuple(part.strip() for part in text.split(",") if part.strip())
        else:
            value = base(text)
    except ValueError as exc:
        raise SettingsError(f"{env_name(f)} / {flag_name(f)}: {exc}") from None
    return _check(f, value)


def _check(f: dataclasses.Field[Any], value: Any) -> Any:
    choices, minimum = f.metadata["choices"], f.metadata["minimum"]
    if value is not None and choices and value not in choices:
        raise SettingsError(f"{flag_name(f)} must be one of {', '.join(choices)} (got {value!r})")
    if value is not None and minimum is not None and value < minimum:
        raise SettingsError(f"{flag_name(f)} must be at least {minimum:g} (got {value})")
    return value


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def build_parser(role: Role, prog: str, description: str) -> argparse.ArgumentParser:
    """An argparse parser with one flag per setting of ``role`` (secrets have none)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, epilog="Every flag can also be set by its environment variable."
    )
    for f in _fields(role):
        if f.metadata["secret"]:
            continue
        base, _ = _base_type(f.name)
        help_text = f"{f.metadata['help']} [{env_name(f)}; default: {_shown_default(f)}]"
        if base is bool:
            parser.add_argument(
                flag_name(f), dest=f.name, action="store_const", const="true", default=None, help=help_text
            )
        else:
            parser.add_argument(
                flag_name(f), dest=f.name, default=None, metavar=f.name.split("_")[-1].upper(), help=help_text
            )
    return parser


def _shown_default(f: dataclasses.Field[Any]) -> str:
    if f.default is None or f.default in ((), ""):
        return "-"
    return _format(f.default)


def resolve(
    role: Role, flags: Mapping[str, str | None], environ: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """Settings for ``role``: defaults, then the environment, then ``flags``, then ``overrides``
    (already typed). Raises :class:`SettingsError` naming the first bad value."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in _fields(role):
        text = None if f.metadata["secret"] else flags.get(f.name)
        if text is None:
            text = environ.get(env_name(f))
        if text is None or not text.strip():  # an empty variable is an unset one
            continue
        values[f.name] = _convert(f, text)
    for name, value in overrides.items():
        values[name] = _check(next(f for f in dataclasses.fields(Settings) if f.name == name), value)
    return Settings(**values)


def parse(
    role: Role,
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> tuple[Settings, argparse.Namespace]:
    """Parses ``argv`` for ``role``: returns the settings and the parsed namespace (for the
    command's own extra arguments, added by ``add_arguments``). Exits with status 2 and a
    one-line message on a bad value, as argparse does."""
    parser = build_parser(role, prog, description)
    if add_arguments is not None:
        add_arguments(parser)
    namespace = parser.parse_args(argv)
    try:
        settings = resolve(role, vars(namespace))
    except SettingsError as exc:
        parser.error(str(exc))
    return settings, namespace


# ------------------------------------------------------------------------- the documented table


def markdown_table() -> str:
    """The configuration table of docs/configuration.md, from the declarations."""
    rows = ["| environment variable | flag | default | commands | meaning |", "|---|---|---|---|---|"]
    for f in dataclasses.fields(Settings):
        roles = ", ".join(r for r in ("serve", "stack", "gateway") if r in f.metadata["roles"])
        flag = "—" if f.metadata["secret"] else f"`{flag_name(f)}`"
        default = _shown_default(f)
        rows.append(
            f"| `{env_name(f)}` | {flag} | {'—' if default == '-' else f'`{default}`'} | {roles} | "
            f"{f.metadata['help']} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    sys.stdout.write(markdown_table() + "\n")
