"""Helpers the tests share: ports, keys, requests, servers (a subprocess, or in this process),
a stand-in model, conversions, load, containers, certificates.

Imported by the test modules and by the conftest files, never the other way round, and no test
module imports another (``tests/unit/test_import_rules.py`` enforces both). Torch-free, like
every import below: the unit tests use it too.
"""

from __future__ import annotations

import asyncio
import math
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import numpy as np

from rerank.gateway.supervisor import Child, grpc_serving
from rerank.service.backends.base import Batch
from rerank.service.model_folder import ModelFolderConfig, PairTemplate, Variant, write_config
from rerank.service.settings import Settings

REPO = Path(__file__).resolve().parent.parent
API_KEY = "test-key-0123456789"
OTHER_KEY = "second-key-abcdef"
AUTH = (("authorization", f"Bearer {API_KEY}"),)
"""gRPC metadata carrying :data:`API_KEY`."""

QUERY = "What is a panda?"
DOCS = [
    "hi",
    "it is a bear",
    "The giant panda (Ailuropoda melanoleuca), sometimes called a panda bear or simply panda, "
    "is a bear species endemic to China.",
    "Пан­да — млекопитающее. 熊猫 是 中国 的 动物。",
    "",
]
"""The panda example, a Cyrillic and CJK mix with a soft hyphen, and an empty document."""


# --------------------------------------------------------------------------------- ports, processes


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


# --------------------------------------------------------------------------------- requests


def rerank_request(model: str, documents: Iterable[str | dict[str, Any]], query: str = QUERY, **fields: Any) -> Any:
    """A ``rerank.v1.RerankRequest``; a dict document becomes a ``{"text": ...}`` struct."""
    from rerank.service.protocol import rerank_pb2

    request = rerank_pb2.RerankRequest(model=model, query=query, **fields)
    for document in documents:
        if isinstance(document, dict):
            request.documents.add().struct_value.update(document)
        else:
            request.documents.add().string_value = document
    return request


# --------------------------------------------------------------------------------- servers


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


# --------------------------------------------------------------------------------- a stand-in model

PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
FIRST_WORD_ID = 4
"""Ids below this are the specials of :func:`word_tokenizer`."""
BERT_LIKE = PairTemplate(prefix=((2, 0),), middle=((3, 0),), suffix=((3, 1),), query_type=0, document_type=1, pad_id=0)
"""``[CLS] query [SEP] document [SEP]``, the document and its ``[SEP]`` of type 1, for
:func:`word_tokenizer`'s ids (``[PAD]`` 0, ``[UNK]`` 1, ``[CLS]`` 2, ``[SEP]`` 3)."""
STAND_IN_WORDS = (
    *("what", "is", "a", "the", "panda", "bear", "bamboo", "eats", "china", "giant", "red", "car"),
    *("fox", "quick", "brown", "lazy", "dog", "sleeps", "forest", "mountain", "river", "boom"),
)
"""The stand-in model's vocabulary; any other word is ``[UNK]``. ``boom`` makes it fail."""


def word_tokenizer(words: Iterable[str]) -> Any:
    """A ``tokenizers`` WordLevel tokenizer built in code: one token per whitespace-separated
    word (punctuation split off), the four BERT specials first, unknown words ``[UNK]``."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {PAD: 0, UNK: 1, CLS: 2, SEP: 3}
    for word in words:
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


def write_stand_in_model(models_dir: Path, name: str, *, max_length: int = 16) -> Path:
    """A model folder for :class:`StandInBackend`: a real ``tokenizer.json`` (:data:`STAND_IN_WORDS`)
    and ``rerank.json``, and an empty ``model.onnx`` that only the ONNX backend would read."""
    folder = models_dir / name
    folder.mkdir(parents=True)
    word_tokenizer(STAND_IN_WORDS).save(str(folder / "tokenizer.json"))
    (folder / "model.onnx").write_bytes(b"")
    config = ModelFolderConfig(
        name=name,
        architecture="stand-in",
        max_length=max_length,
        template=BERT_LIKE,
        type_ids_input=True,
        variants={"fp32": Variant(file="model.onnx", precision="fp32")},
        source={"name": "stand-in-source"},
        notes=("a stand-in for the tests",),
    )
    write_config(folder, config)
    return folder


class StandInBackend:
    """A :class:`~rerank.service.backends.base.Backend` without a model: a pair's logit is how many of
    its document's tokens (type 1, ``[SEP]`` aside) also occur in its query (type 0). A word
    overlap, so a test can say which document wins without running anything. A batch holding
    the word ``boom`` fails, with a message no client may see."""

    provider = "StandInExecutionProvider"
    precision = "fp32"
    variant_key = "fp32"
    streams = 1
    SECRET = "stand-in failure: secret detail 0xC0FFEE"

    def __init__(self, boom_id: int | None = None) -> None:
        self.boom_id = boom_id
        self.batches: list[Batch] = []

    @classmethod
    def for_folder(cls, folder: Path, config: ModelFolderConfig) -> StandInBackend:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(folder / "tokenizer.json")).token_to_id("boom"))

    def run(self, batch: Batch) -> np.ndarray:
        assert batch.token_type_ids is not None
        if self.boom_id is not None and (batch.input_ids == self.boom_id).any():
            raise RuntimeError(self.SECRET)
        self.batches.append(batch)
        logits = []
        for ids, types, mask in zip(batch.input_ids, batch.token_type_ids, batch.attention_mask, strict=True):
            real = [(int(i), int(t)) for i, t, m in zip(ids, types, mask, strict=True) if m and i >= FIRST_WORD_ID]
            query = {i for i, t in real if t == 0}
            logits.append(sum(1.0 for i, t in real if t == 1 and i in query))
        return np.asarray(logits, dtype=np.float64)

    def warm_up(self) -> None:
        ids = np.asarray([[2, 3, 3]], dtype=np.int64)  # [CLS] [SEP] [SEP]
        self.run(Batch(ids, np.ones_like(ids), np.zeros_like(ids)))


def word_overlap(query: str, document: str) -> float:
    """What :class:`StandInBackend` scores for a pair that fits whole, computed on the words
    rather than on token ids: the reference a test compares the server with."""
    known = set(STAND_IN_WORDS)
    query_words = {w for w in re.findall(r"\w+", query) if w in known}
    return float(sum(1 for w in re.findall(r"\w+", document) if w in query_words))


# --------------------------------------------------------------------------------- conversions


def convert_with_cli(source: Path, out: Path, name: str) -> Path:
    """``rerank-convert SOURCE --name NAME --out OUT`` through the real CLI, as a user would."""
    result = subprocess.run(
        [sys.executable, "-m", "rerank.converters.cli", str(source), "--name", name, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out / name


def onnx_scores(folder: Path, items: list[tuple[str, str]]) -> np.ndarray:
    """Logits of a converted model folder for (query, document) pairs, one padded batch, on the CPU."""
    from rerank.service.backends.base import pad
    from rerank.service.backends.onnx import OnnxBackend
    from rerank.service.core.tokenization import PairEncoder
    from rerank.service.model_folder import read_model_folder

    config = read_model_folder(folder)
    encoder = PairEncoder(folder / "tokenizer.json", config.template, config.max_length)
    encoded = [encoder.encode(q, [d]).pairs[0] for q, d in items]
    return OnnxBackend(folder, config, device="cpu").run(pad(encoded, config.template.pad_id, config.type_ids_input))


# --------------------------------------------------------------------------------- load


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


@dataclass(frozen=True)
class Certificates:
    """PEM files of a test CA, a server certificate (localhost, 127.0.0.1) and a client one."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(folder: Path) -> Certificates:
    """A fresh CA and the certificates it signs, made now (nothing is checked in)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return path

    def write_cert(cert: x509.Certificate, path: Path) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("rerank test CA"))
        .issuer_name(name("rerank test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        common: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName]
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    server, server_key = leaf(
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client, client_key = leaf("test client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return Certificates(
        ca=write_cert(ca, folder / "ca.pem"),
        server_cert=write_cert(server, folder / "server.pem"),
        server_key=write_key(server_key, folder / "server.key"),
        client_cert=write_cert(client, folder / "client.pem"),
        client_key=write_key(client_key, folder / "client.key"),
    )


def sigmoid(x: float) -> float:
    """The logistic function, written here (not imported from the service) for parity checks."""
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def jina_logits(rest: httpx.Client, model: str, query: str, documents: list[str]) -> dict[int, float]:
    """index -> raw logit from ``POST /v1/rerank``: the face every other face is compared with."""
    response = rest.post("/v1/rerank", json={"model": model, "query": query, "documents": documents})
    assert response.status_code == 200, response.text
    return {r["index"]: r["relevance_score"] for r in response.json()["results"]}


def best_first(scores: dict[int, float]) -> list[int]:
    """Indexes by score, descending, ties by index (the service's documented order)."""
    return sorted(scores, key=lambda i: (-scores[i], i))


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
    from rerank.service.router.auth import Keyring

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
    """``rerank-stack`` (``python -m rerank.gateway``) on free loopback ports, its whole output (the
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
        argv = [sys.executable, "-m", "rerank.gateway", "--models-dir", str(models), "--replicas", str(replicas)]
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
