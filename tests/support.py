"""Helpers the tests share: ports, keys, processes, load, containers. Imported by tests and
by conftest, never the other way round."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from gateway.supervisor import Child

REPO = Path(__file__).resolve().parent.parent
API_KEY = "test-key-0123456789"
OTHER_KEY = "second-key-abcdef"
AUTH = (("authorization", f"Bearer {API_KEY}"),)
"""gRPC metadata carrying :data:`API_KEY`."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive free loopback ports."""
    for _ in range(200):
        start = free_port()
        if start + n > 65535:
            continue
        try:
            sockets = []
            for port in range(start, start + n):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
        return start
    raise RuntimeError(f"no {n} consecutive free ports")


def children_of(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


@dataclass
class Outcome:
    started: float
    finished: float
    status: int | None
    """HTTP status, or None when the request failed without one (refused, reset, timeout)."""
    error: str = ""


@dataclass
class Load:
    """``clients`` threads sending ``request`` back to back until :meth:`stop`."""

    request: Callable[[httpx.Client], httpx.Response]
    base_url: str
    clients: int = 8
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for i in range(self.clients):
            thread = threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=60) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    response = self.request(client)
                    status: int | None = response.status_code
                    error = "" if status == 200 else response.text[:200]
                except httpx.HTTPError as exc:
                    status, error = None, f"{type(exc).__name__}: {exc}"
                with self._lock:
                    self.outcomes.append(Outcome(started, time.monotonic(), status, error))

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(90)
        return self.outcomes

    def failures(self, started_before: float | None = None) -> list[Outcome]:
        """Requests that did not get a 200 (only those started before ``started_before``)."""
        return [o for o in self.outcomes if o.status != 200 and (started_before is None or o.started < started_before)]


# --------------------------------------------------------------------------------- containers


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``docker ARGS``: its result (raises with the output when ``check`` and it fails)."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


@dataclass
class Containers:
    """Containers and networks a test creates, named with one prefix, all removed by
    :meth:`remove` (call it in a ``finally`` or a fixture's teardown, so failures clean up too)."""

    prefix: str
    names: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)

    def network(self, name: str) -> str:
        full = f"{self.prefix}-{name}"
        docker("network", "create", full)
        self.networks.append(full)
        return full

    def run(self, name: str, image: str, *command: str, options: Sequence[str] = ()) -> str:
        """``docker run -d`` as ``PREFIX-name``; returns the full name."""
        full = f"{self.prefix}-{name}"
        self.names.append(full)
        docker("run", "-d", "--name", full, *options, image, *command)
        return full

    def published(self, name: str, port: int) -> int:
        """The host port that ``port`` of ``name`` is published on (``-p 127.0.0.1::PORT``)."""
        text = docker("port", name, str(port)).stdout.splitlines()[0]
        return int(text.rsplit(":", 1)[1])

    def health(self, name: str) -> str:
        return docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()

    def wait_healthy(self, name: str, timeout: float = 120) -> None:
        """Waits until the image's HEALTHCHECK passes in ``name``; raises with its logs if it
        exits or stays unhealthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.health(name) == "healthy":
                return
            if docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() != "true":
                break
            time.sleep(0.5)
        raise AssertionError(f"{name} is not healthy ({self.health(name)}):\n{self.logs(name)}")

    def logs(self, name: str, tail: int = 60) -> str:
        result = docker("logs", "--tail", str(tail), name, check=False)
        return result.stdout + result.stderr

    def remove(self) -> None:
        for name in reversed(self.names):
            docker("rm", "-f", name, check=False)
        for network in self.networks:
            docker("network", "rm", network, check=False)


# --------------------------------------------------------------------------------- observability


class Samples(dict[tuple[str, frozenset[tuple[str, str]]], float]):
    """Every sample of a Prometheus text exposition, parsed by prometheus_client's own parser:
    ``samples.get_value(name, **labels)`` (0 for a series that does not exist)."""

    @classmethod
    def parse(cls, text: str) -> Samples:
        from prometheus_client.parser import text_string_to_metric_families

        samples = cls()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return samples

    def get_value(self, name: str, **labels: str) -> float:
        return self.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum over every series of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, series), v in self.items() if n == name and wanted <= series)

    def names(self) -> set[str]:
        return {name for name, _ in self}


def key_name(key: str) -> str:
    """The name logs and metrics show for ``key`` when it comes from RERANK_API_KEYS."""
    from service.router.auth import Keyring

    return Keyring.load((key,), None).keys[0].name


@dataclass
class OtlpCollector:
    """An OTLP/gRPC trace collector in this process: it keeps every span it is sent."""

    spans: list = field(default_factory=list)
    port: int = 0
    _server: object = None

    def start(self) -> OtlpCollector:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        collector = self

        class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                for resource_spans in request.resource_spans:
                    for scope_spans in resource_spans.scope_spans:
                        collector.spans.extend(scope_spans.spans)
                return trace_service_pb2.ExportTraceServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        return self

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_for(self, predicate: Callable[[list], bool], timeout: float = 30) -> list:
        """The spans, once ``predicate(spans)`` holds; raises after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate(list(self.spans)):
            if time.monotonic() > deadline:
                names = sorted({s.name for s in self.spans})
                raise AssertionError(f"the spans did not arrive; {len(self.spans)} did: {names}")
            time.sleep(0.05)
        return list(self.spans)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0)


@dataclass
class StackProcess:
    """``rerank-stack`` (``python -m gateway``) on free loopback ports, its whole output (the
    stack's, each replica's and Envoy's, access log included) in ``log``."""

    child: Child
    log: Path
    rest_port: int
    grpc_port: int
    metrics_port: int
    admin_port: int

    @classmethod
    def start(
        cls, models: Path, state: Path, *extra: str, replicas: int = 1, env: dict[str, str] | None = None
    ) -> StackProcess:
        grpc_port, metrics_port = free_ports(replicas), free_ports(replicas)
        rest_port, admin_port = free_port(), free_port()
        state.mkdir(parents=True, exist_ok=True)
        log = state / "stack.log"
        argv = [sys.executable, "-m", "gateway", "--models-dir", str(models), "--replicas", str(replicas)]
        argv += ["--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port), "--rest-port", str(rest_port)]
        argv += ["--rest-host", "127.0.0.1", "--admin-port", str(admin_port), "--state-dir", str(state)]
        argv += ["--drain-delay", "0", *extra]
        child = Child("stack", argv, env={"RERANK_API_KEYS": API_KEY, **(env or {})}, cwd=REPO, log_path=log)
        child.start().wait_until(lambda: "Ready:" in log.read_text(errors="replace"), timeout=180)
        return cls(child, log, rest_port, grpc_port, metrics_port, admin_port)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def lines(self, prefix: str) -> list[str]:
        """The output lines of one child, without the prefix the stack gives them (``envoy``,
        ``replica 1``, ...)."""
        marker = f"{prefix} | "
        return [line.split(marker, 1)[1] for line in self.output().splitlines() if marker in line]

    def stop(self) -> None:
        self.child.stop(grace=30)
