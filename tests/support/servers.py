"""The service under test: a subprocess (for what only a process shows) or in this process."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from rerank.gateway.processes import Child, grpc_serving
from rerank.service.model_folder import ModelFolderConfig
from rerank.service.settings import Settings
from tests.support import API_KEY, OTHER_KEY, REPO
from tests.support.processes import free_port


@dataclass
class Stack:
    """The session's service (a subprocess) with Envoy in front of it."""

    grpc_port: int
    rest_port: int
    models_dir: Path
    process: Child

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def start_service(
    models_dir: Path, *extra: str, env: dict[str, str] | None = None, tls_ca: Path | None = None
) -> tuple[Child, int, Path]:
    """``python -m rerank.service`` on a free port, ready (SERVING; checked over TLS against ``tls_ca``
    when it serves TLS); its output goes to a log file. For what only a process shows: its
    command line, signals, exit status, log output."""
    port = free_port()
    log = models_dir.parent / f"service-{port}.log"
    full_env = {"RERANK_API_KEYS": f"{API_KEY},{OTHER_KEY}", "RERANK_DRAIN_DELAY": "0", **(env or {})}
    command = [sys.executable, "-m", "rerank.service", "--models-dir", str(models_dir), "--grpc-host", "127.0.0.1"]
    child = Child("service", [*command, "--grpc-port", str(port), *extra], env=full_env, cwd=REPO, log_path=log)
    child.start().wait_until(lambda: grpc_serving(port, tls_ca=tls_ca), timeout=120)
    return child, port, log


@contextmanager
def service_behind_envoy(models_dir: Path, envoy_dir: Path, env: dict[str, str]) -> Iterator[Stack]:
    """The real service (a subprocess, :func:`start_service`) with the real Envoy in front of it,
    stopped on leaving. ``env`` is the service's: ``RERANK_METRICS_PORT`` there is routed by Envoy."""
    from rerank.gateway.envoy import start as start_envoy

    proc, port, _ = start_service(models_dir, env=env)
    rest_port = free_port()
    metrics_port = int(env.get("RERANK_METRICS_PORT", 0))
    settings = Settings(
        rest_port=rest_port, grpc_port=port, admin_port=free_port(), rest_host="127.0.0.1", metrics_port=metrics_port
    )
    try:
        envoy = start_envoy(settings, envoy_dir)
        try:
            yield Stack(port, rest_port, models_dir, proc)
        finally:
            envoy.stop()
    finally:
        proc.stop(grace=20)


def server_settings(models_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test server: loopback, an ephemeral port, the test keys, no drain delay."""
    defaults: dict[str, Any] = {
        "models_dir": models_dir,
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "api_keys": (API_KEY, OTHER_KEY),
        "drain_delay": 0.0,
        "grace_period": 5.0,
        "tokenizer_threads": 1,
    }
    return Settings(**{**defaults, **overrides})


class InProcessServer:
    """:class:`rerank.service.server.RerankServer` in this process, on an ephemeral loopback port.

    It runs on its own event loop in a background thread, so that synchronous tests (grpc's
    blocking stubs) and asynchronous ones (any pytest-asyncio loop) can call it alike. Where a
    subprocess adds nothing (no signals, exit status or command line under test), this saves a
    Python start and the import of the whole stack per server. ``backend``, if given, replaces
    the ONNX backend: ``backend(folder, config)`` returns any :class:`~rerank.service.backends.base.Backend`.
    """

    def __init__(self, settings: Settings, backend: Callable[[Path, ModelFolderConfig], Any] | None = None) -> None:
        self.settings = settings
        self.backend = backend
        self.port = 0
        self.server: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._delay: float | None = 0.0
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="rerank-server", daemon=True)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _main(self) -> None:
        from rerank.service.server import RerankServer  # after the thread's loop exists: grpc.aio binds to it

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self.server = RerankServer(self.settings)
        try:
            if self.backend is None:
                self.port = await self.server.start()
            else:
                make = self.backend
                with mock.patch("rerank.service.server.load_backend", lambda folder, config, **_: make(folder, config)):
                    self.port = await self.server.start()
        except Exception as exc:  # noqa: BLE001 - re-raised by start(), in the test's thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.server.stop(delay=self._delay)

    def start(self, timeout: float = 120) -> InProcessServer:
        """Starts the server; raises what its start raised (e.g. ``ConfigurationError``)."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the in-process server did not start in {timeout} s")
        if self._error is not None:
            self._thread.join(10)
            raise self._error
        return self

    def stop(self, delay: float | None = 0.0) -> None:
        """Drains and stops, answering whatever is still in flight (:meth:`RerankServer.stop`);
        ``delay``: how long it keeps serving while NOT_SERVING (None: the drain-delay setting)."""
        self._delay = delay
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "the in-process server did not stop"

    def __enter__(self) -> InProcessServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
