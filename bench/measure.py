"""Timing one peer on one workload, its memory meanwhile, and what the numbers are derived from.

* :func:`measure` sends a workload's requests (from ``clients`` threads at once) and times each;
* :class:`Monitor` polls the peer's memory with psutil meanwhile, and notes CPU used by others;
* :func:`request_tokens` counts a request's tokens with the model folder's own tokenizer and
  pair template, the way the server encodes it;
* :func:`padding_fraction` replays the server's micro-batching rule on those token lengths;
* :func:`machine_peak` estimates the CPU's peak fp32 GFLOP/s from ``lscpu``;
* :func:`cpu_line` names the CPU and its matrix features (/proc/cpuinfo), for every result.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from bench import workloads
from bench.peers import THREADS, Peer
from bench.workloads import Workload
from rerank.service.backends.cpu_features import CpuFeatures


@dataclass
class Measurement:
    """Every repetition of one peer on one workload, pooled."""

    model: str
    peer: str
    precision: str
    workload: str
    latencies: list[float] = field(default_factory=list)
    """Seconds per request, every client's."""
    seconds: float = 0.0
    """Wall time of the measured repetitions, summed."""
    pairs: int = 0
    tokens: int = 0
    peak_rss: int = 0
    other_cpu: float = 0.0
    """Largest share of the machine's CPU that other processes took during a repetition."""

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.seconds

    def latency_ms(self, percentile: float) -> float:
        return float(np.percentile(self.latencies, percentile)) * 1e3

    def gflops(self, matmul_params: int) -> float:
        """2 x parameters x tokens / time: the matmul work every token does, attention left out."""
        return 2 * matmul_params * self.tokens / self.seconds / 1e9


def process_tree(pids: list[int]) -> list[psutil.Process]:
    """``pids`` and, but for this process's own, their descendants: a server's workers (vLLM's
    engine core) are its; the servers this process started for other peers are not this one's."""
    found: dict[int, psutil.Process] = {}
    for pid in pids:
        process = psutil.Process(pid)
        found[pid] = process
        if pid != os.getpid():
            found.update((child.pid, child) for child in process.children(recursive=True))
    return list(found.values())


class Monitor:
    """While a repetition runs: the peak summed RSS of ``pids``' process trees (:func:`process_tree`,
    minus ``baseline``), sampled every ``interval`` seconds, and the share of the machine's CPU
    time spent outside them and this process."""

    def __init__(self, pids: list[int], baseline: int = 0, interval: float = 0.02) -> None:
        self._processes = process_tree(pids)
        self._ours = process_tree(sorted({*pids, os.getpid()}))
        self._baseline, self._interval = baseline, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = (0.0, 0.0, 0.0)
        self.peak = 0
        self.other_cpu = 0.0

    def _sample(self) -> None:
        self.peak = max(self.peak, sum(_rss(p) for p in self._processes) - self._baseline)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def _clocks(self) -> tuple[float, float, float]:
        """(wall, CPU seconds busy machine-wide, CPU seconds of our processes)."""
        machine = psutil.cpu_times()
        busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        ours = sum(_cpu_seconds(p) for p in self._ours)
        return time.perf_counter(), busy, ours

    def __enter__(self) -> Monitor:
        self._sample()
        self._start = self._clocks()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        end = self._clocks()
        wall, busy, ours = (b - a for a, b in zip(self._start, end, strict=False))
        self.other_cpu = max(0.0, (busy - ours) / (wall * (psutil.cpu_count() or 1)))


def _rss(process: psutil.Process) -> int:
    try:
        return int(process.memory_info().rss)
    except psutil.NoSuchProcess:  # a worker that ended: it holds nothing now
        return 0


def _cpu_seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


def measure(peer: Peer, workload: Workload, requests: int, into: Measurement, tokens_per_request: int) -> None:
    """Runs one repetition: each of ``workload.clients`` clients sends ``requests`` requests in
    turn, each with a query of its own (:func:`bench.workloads.query`, numbered on from the
    requests ``into`` has counted, so that repetitions ask new ones too and every peer the same).

    A peer that times its own calls (a library in a worker process, :meth:`Peer.score`) is
    charged those times; with one client the repetition's time is then their sum, so the pipe
    to the worker counts for nothing. Otherwise the client's clock and the wall time count."""

    asked = len(into.latencies)

    def client(number: int) -> list[float]:
        times = []
        for k in range(requests):
            query = workloads.query(workload, 1 + asked + number * requests + k)
            start = time.perf_counter()
            own = peer.score(query, workload.documents)
            times.append(time.perf_counter() - start if own is None else own)
        return times

    # Not a ``with`` block: on Ctrl-C the clients may wait on a server for minutes, and the caller
    # must get on with stopping the servers, which ends their calls.
    pool = ThreadPoolExecutor(workload.clients)
    try:
        with Monitor(peer.pids(), peer.rss_baseline()) as monitor:
            start = time.perf_counter()
            futures = [pool.submit(client, number) for number in range(workload.clients)]
            latencies = [t for future in futures for t in future.result()]
            wall = time.perf_counter() - start
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    into.latencies += latencies
    into.seconds += sum(latencies) if workload.clients == 1 and peer.times_itself else wall
    sent = workload.clients * requests
    into.pairs += sent * workload.pairs
    into.tokens += sent * tokens_per_request
    into.peak_rss = max(into.peak_rss, monitor.peak)
    into.other_cpu = max(into.other_cpu, monitor.other_cpu)


def request_lengths(model_folder: Path, workload: Workload) -> list[int]:
    """Token count of each pair of one request, as our server encodes it (special tokens included)."""
    from rerank.service.core.tokenization import PairEncoder
    from rerank.service.model_folder import read_model_folder

    config = read_model_folder(model_folder)
    encoder = PairEncoder(model_folder / "tokenizer.json", config.template, config.max_length)
    return [len(pair.ids) for pair in encoder.encode(workload.query, list(workload.documents)).pairs]


def padding_fraction(lengths: list[int], requests: int) -> float:
    """Padding share of the micro-batches our server forms for ``requests`` copies of a request
    queued together: the server's own :class:`~rerank.service.core.batching.DynamicBatcher`, with the
    settings the server reads from the environment, replayed on the pairs' token lengths."""
    import asyncio

    from rerank.service.core.batching import DynamicBatcher
    from rerank.service.core.metrics import ModelMetrics
    from rerank.service.core.throughput import Throughput
    from rerank.service.core.tokenization import Pair
    from rerank.service.server import batching_config
    from rerank.service.settings import parse

    async def replay() -> float:
        metrics = ModelMetrics()
        batcher = DynamicBatcher(
            lambda batch: np.zeros(len(batch.input_ids)),
            pad_id=0,
            with_types=False,
            config=batching_config(parse("serve", [], prog="bench", description="")[0]),
            metrics=metrics,
            name="replay",
            # As fast as the bench's machine could ever be: admission control must not refuse
            # a replay that only counts padding.
            throughput=Throughput(1e12),
        )
        pairs = [Pair(i, np.zeros(n, np.int64), np.zeros(n, np.int64)) for i, n in enumerate(lengths)]
        await asyncio.gather(*(batcher.score(pairs) for _ in range(requests)))
        await batcher.close()
        return 1 - metrics.real_tokens / metrics.padded_tokens

    return asyncio.run(replay())


@dataclass(frozen=True)
class Peak:
    """Estimated peak fp32 throughput of the cores the peers use."""

    cpu: str
    cores: int
    ghz: float
    flops_per_cycle: int
    how: str

    @property
    def gflops(self) -> float:
        return self.cores * self.ghz * self.flops_per_cycle


def lscpu() -> dict[str, str]:
    """``lscpu``'s fields by name (``Model name``, ``Flags``, ...)."""
    text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"^([^:\n]+):\s*(.*)$", text, re.M))


MATRIX_FEATURES = ("AMX-BF16", "AMX-INT8", "AVX-512 BF16", "AVX-512 VNNI", "AVX-VNNI", "AVX2")
"""The flags that decide how fast bf16 and int8 run (and so every figure): listed with every result."""


def cpu_line(features: CpuFeatures, cpus: int | None = None) -> str:
    """The CPU's model and which of :data:`MATRIX_FEATURES` it has and lacks, in one line, e.g.
    ``Intel(R) Xeon(R) Processor, 2 CPUs; has AMX-BF16, AMX-INT8, AVX2; lacks AVX-512 BF16``."""
    present = set(features.flags())
    has = [f for f in MATRIX_FEATURES if f in present]
    lacks = [f for f in MATRIX_FEATURES if f not in present]
    count = f", {cpus} CPUs" if cpus else ""
    return (
        f"{features.model}{count}; has {', '.join(has) or 'none of them'}"
        + (f"; lacks {', '.join(lacks)}" if lacks else "")
        + ("" if features.source == "/proc/cpuinfo" else f" ({features.source})")
    )


def cpu_record() -> dict[str, object]:
    """This machine's CPU for a results file: :func:`cpu_line`, and every flag of the detector."""
    from rerank.service.backends.cpu_features import detect

    features = detect()
    return {"line": cpu_line(features, os.cpu_count()), "cpus": os.cpu_count(), **features.to_json()}


def cpu_summary() -> str:
    """This machine's :func:`cpu_line`."""
    return str(cpu_record()["line"])


def machine_peak() -> Peak:
    """cores x GHz x fp32 FLOPs/cycle/core from ``lscpu``: 64 with AVX-512 FMA, 32 with AVX2 FMA,
    16 with AVX, 8 otherwise, assuming two FMA pipes per core (one AVX-512 pipe halves it)."""
    info = lscpu()
    flags = set(info.get("Flags", "").split())
    per_cycle, isa = next(
        (n, isa)
        for n, isa, needs in (
            (64, "AVX-512 FMA", {"avx512f", "fma"}),
            (32, "AVX2 FMA", {"avx2", "fma"}),
            (16, "AVX", {"avx"}),
            (8, "SSE", set()),
        )
        if needs <= flags
    )
    mhz = info.get("CPU max MHz") or info.get("CPU MHz")
    source = "lscpu max MHz" if "CPU max MHz" in info else "lscpu MHz"
    if not mhz:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        mhz, source = re.findall(r"cpu MHz\s*:\s*([\d.]+)", cpuinfo)[0], "/proc/cpuinfo MHz"
    cpus = int(info["CPU(s)"]) // int(info.get("Thread(s) per core", "1"))
    cores = min(cpus, THREADS)
    ghz = float(mhz) / 1000
    how = (
        f"{cores} cores x {ghz:.2f} GHz ({source}) x {per_cycle} fp32 FLOPs/cycle ({isa}: 2 FMA pipes x "
        f"{per_cycle // 4} lanes x 2)"
    )
    return Peak(info.get("Model name", "?"), cores, ghz, per_cycle, how)
