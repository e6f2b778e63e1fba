"""The library peers a CPU user picks, each in its own environment, called through a worker.

===========  ===================================================================================
peer         what runs (``bench/peer_worker.py`` in the environment of :mod:`bench.venvs`)
===========  ===================================================================================
st-ov        sentence-transformers ``CrossEncoder(checkpoint, backend="openvino")``: exported by
             optimum-intel from the checkpoint folder, OpenVINO's default precision (bf16 on a
             CPU with AMX or AVX-512 BF16, with no accuracy check)
st-ov-fp32   the same with ``model_kwargs={"ov_config": {"INFERENCE_PRECISION_HINT": "f32"}}``
st-onnx      ``backend="onnx"``: exported by optimum-onnx, ONNX Runtime, fp32
fastembed    fastembed's ``TextCrossEncoder`` on sentence-transformers' ONNX export of the
             checkpoint (``add_custom_model`` + ``specific_model_path``: no download)
ov-genai     OpenVINO GenAI's ``TextRerankPipeline(folder, "CPU").rerank(query, documents)`` on
             ``optimum-cli export openvino --task text-classification`` of the checkpoint, at
             OpenVINO's default precision; a Qwen3-Reranker exported as OpenVINO publishes it, a
             ``Qwen3ForSequenceClassification`` whose one row is ``lm_head[yes] - lm_head[no]``,
             its query and documents written into the model card's prompt (the pipeline joins
             ``query + document`` and applies no template of its own)
ov-genai-fp32  the same with ``INFERENCE_PRECISION_HINT`` f32
===========  ===================================================================================

The worker times the library call itself, so the pipe between the bench and the worker is not
charged to the peer: the figures are what an application calling the library in-process waits.
Calls are serialised, as for ``st-fp32``.
"""

from __future__ import annotations

import json
import select
import shutil
import subprocess
import threading
from pathlib import Path
from typing import IO, Any

from bench import venvs
from bench.models import DECODER, REPO, BenchModel
from bench.peers import LIBRARY_BATCH_SIZES, STARTUP_TIMEOUT, THREADS, Peer
from rerank.gateway.processes import dying_with_parent

WORKER = REPO / "bench" / "peer_worker.py"
"""Run with ``python -P``: its folder (bench/, with a ``profile.py``) must not shadow the stdlib."""
NAMES = ("st-ov", "st-ov-fp32", "st-onnx", "fastembed", "ov-genai", "ov-genai-fp32")
WORKER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
"""A worker's or exporter's environment: nothing from the Hub, no tool from the bench's own venv."""


class WorkerPeer(Peer):
    """A library in a worker process of its environment, spoken to in JSON lines."""

    batch_sizes = LIBRARY_BATCH_SIZES
    times_itself = True

    def __init__(self, name: str, venv: venvs.Venv, arguments: list[str], workdir: Path) -> None:
        self.name, self.precision = name, "?"
        self.venv, self.arguments, self.workdir = venv, arguments, workdir
        self._popen: subprocess.Popen[str] | None = None
        self._log: IO[bytes] | None = None
        self._lock = threading.Lock()
        self._stamp: dict[str, Any] = {}
        self.info: dict[str, Any] = {}

    def prepare(self) -> None:
        """Builds what the worker loads, before it starts (nothing by default)."""

    def start(self) -> None:
        self._stamp = self.venv.ensure()
        self.prepare()
        log_path = self.workdir / f"{self.name}.log"
        self._log = log_path.open("ab")
        argv = [str(self.venv.python), "-P", str(WORKER), *self.arguments, "--threads", str(THREADS)]
        self._popen = subprocess.Popen(
            dying_with_parent(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=self.workdir,
            env={**WORKER_ENV, "OMP_NUM_THREADS": str(THREADS)},
        )
        ready = self._read(STARTUP_TIMEOUT)
        if not ready.get("ready"):
            tail = log_path.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"{self.name}: {ready.get('error', 'the worker exited')}\n{tail}")
        self.info = ready["info"]
        precision = str(self.info.get("precision", "?")).lower()
        self.precision = {"f32": "fp32", "float32": "fp32", "bfloat16": "bf16"}.get(precision, precision)

    def _read(self, timeout: float) -> dict[str, Any]:
        """The worker's next JSON line; {} if it exits or stays silent for ``timeout`` seconds."""
        assert self._popen is not None and self._popen.stdout is not None
        readable, _, _ = select.select([self._popen.stdout], [], [], timeout)
        line = self._popen.stdout.readline() if readable else ""
        reply: dict[str, Any] = json.loads(line) if line else {}
        return reply

    def _call(self, pairs: list[tuple[str, str]], raw: bool) -> tuple[list[float], float]:
        assert self._popen is not None and self._popen.stdin is not None and self._popen.stdout is not None
        with self._lock:
            self._popen.stdin.write(json.dumps({"pairs": pairs, "batch_size": self.batch_size, "raw": raw}) + "\n")
            self._popen.stdin.flush()
            reply = json.loads(self._popen.stdout.readline() or '{"error": "the worker exited"}')
        if "error" in reply:
            raise RuntimeError(f"{self.name}: {reply['error']}")
        scores = [float(s) for s in reply["scores"]]
        if len(scores) != len(pairs):
            raise RuntimeError(f"{self.name}: {len(scores)} scores for {len(pairs)} pairs")
        return scores, float(reply["seconds"])

    def pairs(self, query: str, documents: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
        """The (query, document) texts the library is given."""
        return [(query, d) for d in documents]

    def score(self, query: str, documents: tuple[str, ...]) -> float:
        return self._call(self.pairs(query, documents), raw=False)[1]

    def logits(self, query: str, documents: list[str]) -> list[float]:
        return self._call(self.pairs(query, documents), raw=True)[0]

    def stop(self) -> None:
        if self._popen is not None:
            if self._popen.stdin is not None:
                self._popen.stdin.close()
            try:
                self._popen.wait(10)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
            self._popen = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def pids(self) -> list[int]:
        assert self._popen is not None
        return [self._popen.pid]

    def facts(self) -> dict[str, Any]:
        return {"environment": self._stamp, "worker": self.info, "batch_size": self.batch_size}


class FastEmbed(WorkerPeer):
    """fastembed on sentence-transformers' ONNX export, made once in the st-onnx environment
    (``<model cache>/onnx-export``): fastembed has no exporter of its own."""

    def __init__(self, model: BenchModel, workdir: Path) -> None:
        self.export = model.checkpoint.parent / "onnx-export"
        super().__init__("fastembed", venvs.FASTEMBED, ["fastembed", "--model-dir", str(self.export)], workdir)
        self.checkpoint = model.checkpoint

    def prepare(self) -> None:
        if (self.export / "onnx" / "model.onnx").exists():
            return
        venvs.ST_ONNX.ensure()
        partial = self.export.with_name(self.export.name + ".part")
        argv = [str(venvs.ST_ONNX.python), "-P", str(WORKER), "export-onnx", "--checkpoint", str(self.checkpoint)]
        _run([*argv, "--out", str(partial)], "exporting to ONNX for fastembed")
        partial.rename(self.export)


def _run(argv: list[str], what: str) -> None:
    """Runs an exporter in a worker's environment; raises with its output's end if it fails."""
    result = subprocess.run(argv, capture_output=True, text=True, env=WORKER_ENV)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{result.stderr[-2000:]}")


class OvGenai(WorkerPeer):
    """OpenVINO GenAI's rerank pipeline on optimum-intel's export of the checkpoint, made once in
    the st-openvino environment (``<model cache>/ov-genai-export``). A request's documents go to
    ``rerank`` as one call: the pipeline has no batch size, it runs them as one batch."""

    batch_sizes = ()

    def __init__(self, name: str, model: BenchModel, workdir: Path) -> None:
        self.export = model.checkpoint.parent / "ov-genai-export"
        self.checkpoint, self.decoder = model.checkpoint, model.kind == DECODER
        arguments = ["ov-genai", "--model-dir", str(self.export), "--max-length", str(model.max_length)]
        if name == "ov-genai-fp32":
            arguments += ["--precision", "f32"]
        super().__init__(name, venvs.ST_OPENVINO, arguments, workdir)

    def pairs(self, query: str, documents: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
        if not self.decoder:
            return super().pairs(query, documents)
        from rerank.converters.qwen3.prompt import DEFAULT_INSTRUCTION, DOCUMENT_PART, PREFIX, QUERY_PART, SUFFIX

        # The pipeline scores the text query + document: the model card's prompt, cut in two.
        query_text = PREFIX + QUERY_PART.format(instruction=DEFAULT_INSTRUCTION, query=query)
        return [(query_text, DOCUMENT_PART.format(document=d) + SUFFIX) for d in documents]

    def prepare(self) -> None:
        if (self.export / "openvino_model.xml").exists():
            return
        work = self.export.with_name(self.export.name + ".part")
        shutil.rmtree(work, ignore_errors=True)
        source = self.checkpoint
        if self.decoder:
            source = work / "seq-cls"
            build = [str(self.venv.python), "-P", str(WORKER), "qwen3-seq-cls"]
            _run([*build, "--checkpoint", str(self.checkpoint), "--out", str(source)], "building the seq-cls model")
        out = work / "export"
        export = [str(self.venv.executable("optimum-cli")), "export", "openvino", "--model", str(source)]
        _run([*export, "--task", "text-classification", "--weight-format", "fp32", str(out)], "optimum-cli export")
        out.rename(self.export)
        shutil.rmtree(work)


def make(name: str, model: BenchModel, workdir: Path) -> Peer:
    """The library peer ``name`` (one of :data:`NAMES`) on ``model``'s checkpoint."""
    checkpoint = str(model.checkpoint)
    if name == "st-ov":
        return WorkerPeer(name, venvs.ST_OPENVINO, ["st", "--checkpoint", checkpoint, "--backend", "openvino"], workdir)
    if name == "st-ov-fp32":
        arguments = ["st", "--checkpoint", checkpoint, "--backend", "openvino", "--precision", "f32"]
        return WorkerPeer(name, venvs.ST_OPENVINO, arguments, workdir)
    if name == "st-onnx":
        return WorkerPeer(name, venvs.ST_ONNX, ["st", "--checkpoint", checkpoint, "--backend", "onnx"], workdir)
    if name == "fastembed":
        return FastEmbed(model, workdir)
    if name in ("ov-genai", "ov-genai-fp32"):
        return OvGenai(name, model, workdir)
    raise ValueError(f"unknown library peer {name!r}; expected one of {NAMES}")
