"""``GET /metrics``: the service's Prometheus metrics over plain HTTP, on the metrics port.

Prometheus scrapes this port directly (Kubernetes: each pod's, which a NetworkPolicy opens to the
scraper alone), and Envoy routes ``GET /metrics`` on its public port here (not transcoded). A key
is needed unless ``RERANK_METRICS_REQUIRE_KEY`` is off: checked here, by the same
:class:`~rerank.service.router.auth.Keyring` as gRPC calls (and, through Envoy, by the edge's check
first), so that the per-key series are not anyone's to read.

One process, or all of a host's (multiprocess mode): with ``--metrics-dir``
(``PROMETHEUS_MULTIPROC_DIR``), which rerank-stack sets for its replicas, every process writes its
values into files in that folder and any process's ``/metrics`` reads them all back, summed. So
Envoy may route ``/metrics`` to any replica and still show the whole stack.

The server is the standard library's WSGI server (:mod:`wsgiref`) on threads of its own, so the
service's event loop never renders a scrape; it serves ``GET``/``HEAD`` of one path, gives a
client :data:`READ_SECONDS` to send its request, and serves :data:`MAX_CONNECTIONS` at once
(more are closed at once).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from rerank.service.core.metrics import Metrics
from rerank.service.errors import ConfigurationError
from rerank.service.router.auth import Keyring

log = logging.getLogger(__name__)

PATH = "/metrics"
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
READ_SECONDS = 5.0
"""How long a client has to send its request line and headers (then it is disconnected)."""
MAX_CONNECTIONS = 32
"""Connections served at once; more are closed on arrival."""

StartResponse = Callable[..., Any]
Environ = dict[str, Any]


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


class _Handler(WSGIRequestHandler):
    """wsgiref's handler, with a deadline for the request and without its stderr log."""

    timeout = READ_SECONDS

    def handle(self) -> None:
        with contextlib.suppress(TimeoutError, ConnectionError):  # a client too slow, or gone: it closes
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's server, a thread per connection, at most :data:`MAX_CONNECTIONS` of them."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int]) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics port: a request from %s failed", client_address, exc_info=True)


class MetricsEndpoint:
    """An HTTP server answering ``GET /metrics`` from ``registry``; with ``require_key``, only
    to a caller with a key of ``keyring``."""

    def __init__(self, registry: CollectorRegistry, *, keyring: Keyring, require_key: bool) -> None:
        self.keyring = keyring
        self.require_key = require_key
        self._render = make_wsgi_app(registry)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def app(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI application."""
        if environ.get("PATH_INFO") != PATH:
            return _reply(start_response, "404 Not Found", f"not found; the metrics are at {PATH}\n")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _reply(start_response, "405 Method Not Allowed", "GET only\n", [("Allow", "GET, HEAD")])
        token = environ.get("HTTP_AUTHORIZATION")
        if self.require_key and (not token or self.keyring.caller([("authorization", token)]) is None):
            message = "invalid API key" if token else "missing API key: send the header 'authorization: Bearer <key>'"
            return _reply(start_response, "401 Unauthorized", message + "\n", [("WWW-Authenticate", "Bearer")])
        return list(self._render(environ, start_response))

    def start(self, host: str, port: int) -> int:
        """Listens on ``host:port`` (0: a free port); returns the port. Raises
        :class:`ConfigurationError` if it cannot."""
        try:
            server = _Server((host, port))
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {host}:{port} ({exc.strerror}); choose another port with "
                "RERANK_METRICS_PORT / --metrics-port"
            ) from None
        server.set_app(self.app)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
        self._thread.start()
        self.port = int(server.server_address[1])
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _reply(
    start_response: StartResponse, status: str, text: str, headers: list[tuple[str, str]] | None = None
) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), *(headers or [])])
    return [text.encode()]
