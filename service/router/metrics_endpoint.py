"""``GET /metrics``: the service's Prometheus metrics over plain HTTP, on the metrics port.

Prometheus scrapes this port directly (Kubernetes: each pod's), and Envoy routes ``GET /metrics``
on the REST port here (not transcoded). The key check, when ``RERANK_METRICS_REQUIRE_KEY`` is on,
is done here, by the same :class:`~rerank.service.router.auth.Keyring` as gRPC calls, so Envoy needs no
auth filter and knows no keys: it forwards ``Authorization`` like any header. A valid key's name
goes back in the ``x-rerank-key`` response header, which Envoy moves into its access log and
strips (as for every call).

One process, or all of a host's (multiprocess mode): with ``--metrics-dir``
(``PROMETHEUS_MULTIPROC_DIR``), which rerank-stack sets for its replicas, every process writes its
values into files in that folder and any process's ``/metrics`` reads them all back, summed. So
Envoy may route ``/metrics`` to any replica and still show the whole stack.

The server is :class:`~rerank.service.telemetry.http1.Http1Server` on its own thread: the service's event
loop never renders a scrape, and Envoy's admission checks are answered on keep-alive connections
without waiting behind one.

``GET /admission?bytes=N[&model=NAME]``: the early admission check. Envoy asks it (a Lua filter,
:func:`rerank.gateway.envoy_config.filters.admission_script`) before it reads a large rerank body: 200 if a request
of ``N`` bytes may be queued, else 429 with ``Retry-After`` and the service's own QueueFull error
as JSON (``{"code": 8, "message", "details"}``), which Envoy sends to the client as it is. The
answer comes from :meth:`rerank.service.server.RerankServer.early_admission` (state the batchers publish;
nothing on the event loop). A 200 may carry ``x-rerank-hold``: the token of the place held for the
body (:class:`~rerank.service.core.admission.Holds`), which Envoy puts on the request so that the service
admits it without a second look, and ``x-rerank-replica``: this port, by which Envoy sends the
request to this replica (the one holding its place). It needs no key: it says only whether the server is busy, and Envoy
routes no client request to it.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry, make_wsgi_app, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from rerank.service.core.metrics import Metrics
from rerank.service.errors import ConfigurationError, QueueFull
from rerank.service.router.auth import Keyring
from rerank.service.router.status import HOLD_HEADER, REPLICA_HEADER, status_json
from rerank.service.telemetry.context import KEY_NAME_HEADER
from rerank.service.telemetry.http1 import Http1Server

log = logging.getLogger(__name__)

PATH = "/metrics"
ADMISSION_PATH = "/admission"
EARLY_HEADER = "x-rerank-admission"
"""On a 429 of the early check: ``early`` (the request body was never read)."""
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

StartResponse = Callable[..., Any]
Environ = dict[str, Any]
Admission = Callable[[int, str | None], QueueFull | str]
"""``(body bytes, model or None) -> the refusal, or the token of the place held for the body
(:class:`~rerank.service.core.admission.Holds`; '' where none is)``."""


def server_metrics(directory: Path | None) -> Metrics:
    """The metric families of a server: in their own registry, or, with ``directory``, written
    to the multiprocess folder (which must be this process's ``PROMETHEUS_MULTIPROC_DIR`` from
    before prometheus_client was imported: ``rerank-serve`` sees to it)."""
    if directory is None:
        return Metrics(CollectorRegistry(auto_describe=True))
    if not getattr(values.ValueClass, "_multiprocess", False) or os.environ.get(MULTIPROCESS_ENV) != str(directory):
        raise ConfigurationError(
            f"the metrics folder {directory} must be in {MULTIPROCESS_ENV} before the process starts"
        )
    directory.mkdir(parents=True, exist_ok=True)
    forget_dead_processes(directory)
    return Metrics(None)


def exposition_registry(metrics: Metrics, directory: Path | None) -> CollectorRegistry:
    """What ``/metrics`` renders: the server's own registry, or every process's files."""
    if directory is None:
        assert metrics.registry is not None
        return metrics.registry
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return registry


_LIVE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db$")


def forget_dead_processes(directory: Path) -> None:
    """Drops the gauges of processes that are gone (a replica that was killed): a queue gauge
    must not add a dead process's last value. Their counters stay, so totals never go down."""
    for path in glob.glob(str(directory / "gauge_live*_*.db")):
        match = _LIVE_FILE.search(path)
        if match and not _alive(int(match.group(1))):
            mark_process_dead(int(match.group(1)), str(directory))


def forget_process(directory: Path, pid: int) -> None:
    """At a clean exit: this process's gauges leave the sums."""
    mark_process_dead(pid, str(directory))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class MetricsEndpoint:
    """An HTTP server answering ``GET /metrics`` from ``registry``; with ``require_key``, only
    to a caller with a key of ``keyring``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        keyring: Keyring,
        require_key: bool,
        admission: Admission | None = None,
    ) -> None:
        self.keyring = keyring
        self.require_key = require_key
        self.admission = admission
        self._render = make_wsgi_app(registry)
        self._server: Http1Server | None = None
        self.port = 0
        """The port it listens on, once started (which replica a hold is on, for Envoy)."""

    def app(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI application."""
        if environ.get("PATH_INFO") == ADMISSION_PATH and self.admission is not None:
            return self._admission(environ, start_response)
        if environ.get("PATH_INFO") != PATH:
            return _reply(start_response, "404 Not Found", f"not found; the metrics are at {PATH}\n")
        token = environ.get("HTTP_AUTHORIZATION")
        caller = self.keyring.caller([("authorization", token)]) if token and self.keyring else None
        if self.require_key and caller is None:
            message = (
                "missing API key: send the header 'authorization: Bearer <key>'" if not token else "invalid API key"
            )
            return _reply(start_response, "401 Unauthorized", message + "\n", [("WWW-Authenticate", "Bearer")])
        if caller is None:
            return list(self._render(environ, start_response))

        def with_name(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            return start_response(status, [*headers, (KEY_NAME_HEADER, caller.name)], *rest)

        return list(self._render(environ, with_name))

    def _admission(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        assert self.admission is not None
        query = parse_qs(environ.get("QUERY_STRING", ""))
        size = (query.get("bytes") or [""])[0]
        if not size.isdigit():
            return _reply(start_response, "400 Bad Request", "bytes=<the request body's size> is required\n")
        token = environ.get("HTTP_AUTHORIZATION")
        caller = self.keyring.caller([("authorization", token)]) if token and self.keyring else None
        if self.keyring and caller is None:
            # No valid key: the service answers it (401), whatever its load.
            return _reply(start_response, "200 OK", "admit: no valid key; the service answers\n")
        refusal = self.admission(int(size), (query.get("model") or [None])[0])
        if isinstance(refusal, str):
            held = [(HOLD_HEADER, refusal), (REPLICA_HEADER, str(self.port))] if refusal else []
            return _reply(start_response, "200 OK", "admit\n", held)
        body = json.dumps(status_json(refusal), separators=(",", ":")).encode()
        headers = [
            ("Content-Type", "application/json"),
            ("Retry-After", str(refusal.retry_after or 1)),
            (EARLY_HEADER, "early"),
        ]
        if caller is not None:
            headers.append((KEY_NAME_HEADER, caller.name))  # for Envoy's access log
        start_response("429 Too Many Requests", headers)
        return [body]

    def start(self, host: str, port: int) -> int:
        """Listens on ``host:port`` (0: a free port); returns the port. Raises
        :class:`ConfigurationError` if it cannot."""
        server = Http1Server(self.app, fast=lambda path: path == ADMISSION_PATH, name="metrics")
        try:
            bound = server.start(host, port)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {host}:{port} ({exc.strerror}); choose another port with "
                "RERANK_METRICS_PORT / --metrics-port"
            ) from None
        self._server = server
        self.port = bound
        return bound

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


def _reply(
    start_response: StartResponse, status: str, text: str, headers: list[tuple[str, str]] | None = None
) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), *(headers or [])])
    return [text.encode()]
