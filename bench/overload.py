"""``python -m bench.overload``: the whole stack under more load than it can serve (issue 10 §1).

    python -m bench.overload                       # 24 clients x 600 documents for 30 s, + the probe
    python -m bench.overload --seconds 10 --clients 4     # a short look
    python -m bench.overload --model qwen3-tiny           # a Qwen3-Reranker (decoder) served

Starts ``rerank-stack`` (one service replica and Envoy, a real API key) on a bench model
(:func:`bench.models.ensure`, default bert-small: MiniLM-L6's shape, random weights), then for
``--seconds``:

* ``--clients`` heavy clients, each looping ``POST /v1/rerank`` with 1 query x ``--documents``
  documents of ~``--words`` words (deterministic text, :func:`bench.workloads.texts`, a seed per
  client). **Retry-After is ignored**: after a 429 a client waits a fixed ``--pause`` (0.1 s)
  and sends the same request again; after a 200 it sends at once. Honouring Retry-After (at
  least 1 s) would back the load off and hide the overload; the point is that refusals stay fast
  while clients keep pushing. ``--honour-retry-after``: a client waits the 429's Retry-After
  (or ``--pause`` where it is longer or absent) instead: how well-behaved clients fare.
* one probe client sending 1 query x 1 short document every ``--probe-interval`` s on a fixed
  schedule (open loop: a slow answer does not delay the next probe, and each probe gets a
  connection of its own when the kept ones are busy, so none waits for the client's pool).
* the refusal probe: one heavy request (as the heavy clients send) every ``--refusal-interval``
  s, open loop, on its own connections. Its 429s are the target's figure: the heavy clients
  time their own 429s too, but their event loops, busy sending ~420 KB bodies for two dozen
  clients, lag (printed), which is the client's share, not the refusal's. Envoy's own time for
  every 429 (its access log) is printed too. ``--realtime-probes`` runs the probes' process
  SCHED_FIFO, so the scheduler's delay in waking it is out of the probes' figures too (on a
  host busier than the bench itself).

Heavy clients run in ``--processes`` worker processes (asyncio + httpx, one keep-alive
connection per client), the probes in this process, so a busy client loop does not delay the
probe's timing; each process reports the CPU it used and its event loop's lag (how late a 10 ms
timer fires), which bounds how much of a latency is the client's own. The service replica's
VmRSS (``/proc/<pid>/status``) is sampled every 0.25 s from before the load until ``--after``
seconds after the last answer.

Prints a table with the targets, and writes ``bench/results/overload.json`` (with another
``--model``, ``overload-<model>.json``; with ``--honour-retry-after``, ``-honour-retry-after``
added) and ``.png`` (latency of every request over time, coloured by status, and the RSS).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import multiprocessing
import os
import resource
import shlex
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench import models as bench_models
from bench import results
from bench.measure import cpu_summary
from bench.peers import API_KEY, STARTUP_TIMEOUT, free_port, spawn_server
from bench.workloads import texts

RESULTS = results.RESULTS
KINDS = ("heavy", "probe", "refusal")
"""Who sent a request: a heavy client, the 1-document probe, the refusal probe."""
RSS_INTERVAL = 0.25
LAG_INTERVAL = 0.01
TARGETS = {
    "429_p99_ms": 50.0,
    "probe_p95_ms": 1000.0,
    "rss_growth_mb": 300.0,
    "rss_return_mb": 50.0,
}
"""The issue's figures; ``rss_return_mb``: how far above its start the RSS may end ("near its start")."""


DEFAULT_MODEL = "bert-small"
"""The bench model unless ``--model`` says otherwise (its record has no model in its name)."""


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        choices=[*bench_models.SHAPES, *bench_models.QWEN3],
        help="bench model (a Qwen3-Reranker one: the decoder's cost under the same admission)",
    )
    p.add_argument("--variant", help="graph variant to serve (default: the server's choice for the CPU)")
    p.add_argument("--clients", type=int, default=24, help="heavy clients (default 24)")
    p.add_argument("--documents", type=int, default=600, help="documents per heavy request (default 600)")
    p.add_argument("--words", type=int, default=100, help="words per heavy document, ±10%% (default 100)")
    p.add_argument("--seconds", type=float, default=30.0, help="how long clients send (default 30)")
    p.add_argument("--probe-interval", type=float, default=0.5, help="seconds between probes (default 0.5)")
    p.add_argument(
        "--refusal-interval",
        type=float,
        default=0.1,
        help="seconds between the refusal probe's heavy requests (default 0.1; 0: no refusal probe)",
    )
    p.add_argument(
        "--realtime-probes",
        action="store_true",
        help="run the probes' process SCHED_FIFO (needs root or CAP_SYS_NICE): their own wake-up delay out of "
        "their figures",
    )
    p.add_argument("--pause", type=float, default=0.1, help="a heavy client's fixed wait after a 429 (default 0.1)")
    p.add_argument(
        "--honour-retry-after", action="store_true", help="after a 429 wait its Retry-After (at least --pause)"
    )
    p.add_argument("--processes", type=int, default=2, help="worker processes for the heavy clients (default 2)")
    p.add_argument("--timeout", type=float, default=90.0, help="client timeout per request (default 90 s)")
    p.add_argument("--before", type=float, default=3.0, help="seconds of RSS before the load (default 3)")
    p.add_argument("--after", type=float, default=10.0, help="seconds of RSS after the last answer (default 10)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: bench/results)")
    a = p.parse_args(argv)
    if a.clients < 1 or a.processes < 1 or a.documents < 1 or a.seconds <= 0:
        p.error("--clients, --processes, --documents and --seconds must be positive")
    a.processes = min(a.processes, a.clients)
    return a


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- clients


def _label(status: int) -> str:
    if status in (200, 429):
        return str(status)
    return "5xx" if status >= 500 else f"{status // 100}xx"


async def _post(client: httpx.AsyncClient, body: bytes, documents: int) -> tuple[float, str, float, float, bool]:
    """Sends one request; returns (start, outcome, seconds, Retry-After seconds or 0, refused
    early): outcome is "200", "429", "5xx", "4xx" (any other), "timeout", "connection" (refused,
    reset, closed) or "bad" (a 200 with the wrong number of results); refused early: a 429 that
    Envoy's early admission check gave before reading the body (``x-rerank-admission``)."""
    start = time.monotonic()
    retry_after = 0.0
    early = False
    try:
        reply = await client.post("/v1/rerank", content=body)
        outcome = _label(reply.status_code)
        early = reply.headers.get("x-rerank-admission") == "early"
        with contextlib.suppress(ValueError):
            retry_after = float(reply.headers.get("retry-after", "0"))
        if outcome == "200" and len(reply.json()["results"]) != documents:
            outcome = "bad"
    except httpx.TimeoutException:
        outcome = "timeout"
    except httpx.TransportError:
        outcome = "connection"
    return start, outcome, time.monotonic() - start, retry_after, early


def _http_client(base_url: str, connections: int | None, timeout: float) -> httpx.AsyncClient:
    """``connections`` None: as many as requests in flight (an open-loop sender must not wait for a
    pooled connection: its figure would be the pool's queue), keeping 8 alive between them."""
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"authorization": f"Bearer {API_KEY}", "content-type": "application/json"},
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections or 8),
        timeout=timeout,
    )


def request_body(model: str, query: str, documents: tuple[str, ...]) -> bytes:
    return json.dumps(
        {"model": model, "query": query, "documents": list(documents), "return_documents": False}
    ).encode()


class LagMeter:
    """How late a ``LAG_INTERVAL`` timer fires on this event loop: the client's own delay."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(LAG_INTERVAL)
            self.lags.append(max(0.0, time.monotonic() - before - LAG_INTERVAL))

    def __enter__(self) -> LagMeter:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _heavy_worker(conn: Connection, spec: dict[str, Any]) -> None:
    """One worker process: builds its clients' requests, says "ready", gets the start time (a
    ``time.monotonic()`` value: system-wide on Linux), runs its clients and sends back their
    records, its CPU seconds and its loop lag."""
    bodies = {}
    for index in spec["clients"]:
        query, documents = texts(f"overload/{index}", spec["documents"], spec["words"])
        bodies[index] = request_body(spec["model"], query, documents)
    conn.send("ready")
    origin: float = conn.recv()
    records: list[tuple[str, int, float, str, float]] = []
    early: list[float] = []

    async def heavy(client: httpx.AsyncClient, index: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            start, outcome, seconds, retry_after, refused_early = await _post(client, bodies[index], spec["documents"])
            records.append(("heavy", index, start - origin, outcome, seconds))
            if refused_early:
                early.append(seconds)
            if outcome != "200":
                await asyncio.sleep(max(spec["pause"], retry_after if spec["honour_retry_after"] else 0.0))

    async def run() -> list[float]:
        await asyncio.sleep(max(0.0, origin - time.monotonic()))
        async with _http_client(spec["base_url"], len(bodies), spec["timeout"]) as client:
            with LagMeter() as lag:
                await asyncio.gather(*(heavy(client, i, origin + spec["seconds"]) for i in bodies))
        return lag.lags

    cpu = _cpu_seconds()
    lags = asyncio.run(run())
    conn.send({"records": records, "early": early, "cpu_seconds": _cpu_seconds() - cpu, "lags": lags})
    conn.close()


async def _probe(
    base_url: str, model: str, origin: float, seconds: float, interval: float, timeout: float, refusal: dict[str, Any]
) -> Any:
    """The 1-document client: one request every ``interval`` s from ``origin`` for ``seconds``;
    and the refusal probe: one heavy request (``refusal["body"]``, ``refusal["documents"]``
    documents, as the heavy clients send) every ``refusal["interval"]`` s, on its own
    connections. Both open loop (a slow answer does not delay the next)."""
    query, documents = texts("overload/probe", 1, 12)
    body = request_body(model, query, documents)
    records: list[tuple[str, int, float, str, float]] = []

    async def one(client: httpx.AsyncClient, at: float, kind: str, content: bytes, count: int) -> None:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        start, outcome, took, _, _ = await _post(client, content, count)
        records.append((kind, -1, start - origin, outcome, took))

    async with (
        _http_client(base_url, None, timeout) as client,
        _http_client(base_url, None, timeout) as refusals,
    ):
        with LagMeter() as lag:
            count = int(seconds / interval)
            sends = [one(client, origin + k * interval, "probe", body, 1) for k in range(count)]
            every = refusal["interval"]
            if every > 0:
                sends += [
                    one(refusals, origin + k * every, "refusal", refusal["body"], refusal["documents"])
                    for k in range(int(seconds / every))
                ]
            await asyncio.gather(*sends)
    return records, lag.lags


# ---------------------------------------------------------------------------------- the stack


class RssSampler:
    """VmRSS of one process every ``RSS_INTERVAL`` s, in a thread, as (seconds from ``origin``, bytes)."""

    def __init__(self, pid: int, origin: float) -> None:
        self._path = Path(f"/proc/{pid}/status")
        self.origin = origin
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> int:
        for line in self._path.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS in {self._path}")

    def _run(self) -> None:
        while True:
            self.samples.append((time.monotonic() - self.origin, self._read()))
            if self._stop.wait(RSS_INTERVAL):
                return

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Stack:
    """A running ``rerank-stack``: its process, the replica's and Envoy's pids, its URL."""

    child: Any
    base_url: str
    service_pid: int
    envoy_pid: int


def start_stack(model: bench_models.BenchModel, variant: str | None, workdir: Path) -> Stack:
    """``rerank-stack`` with one replica on free loopback ports and a known API key; returns
    once its banner says Ready."""
    rest = free_port()
    command = [
        sys.executable,
        "-m",
        "rerank.gateway.stack",
        "--models-dir",
        str(model.models_dir),
        "--replicas",
        "1",
        "--rest-host",
        "127.0.0.1",
        "--rest-port",
        str(rest),
        "--grpc-port",
        str(free_port()),
        "--admin-port",
        str(free_port()),
        "--state-dir",
        str(workdir / "state"),
    ]
    if variant:
        command += ["--variant", variant]
    log_path = workdir / "stack.log"
    child = spawn_server(command, log_path, env={"RERANK_API_KEYS": API_KEY})
    child.wait_until(lambda: "Ready:" in log_path.read_text(errors="replace"), STARTUP_TIMEOUT, "rerank-stack")
    children = psutil.Process(child.pid).children()
    service = [p.pid for p in children if "rerank.service" in p.cmdline()]
    envoy = [p.pid for p in children if "envoy" in p.name()]
    if len(service) != 1 or len(envoy) != 1:
        raise RuntimeError(f"expected one replica and one Envoy under rerank-stack, found {children}")
    return Stack(child, f"http://127.0.0.1:{rest}", service[0], envoy[0])


# ---------------------------------------------------------------------------------- figures


def service_counts(base_url: str) -> dict[str, dict[str, float]]:
    """From the service's metrics through Envoy: ``rerank_early_holds_total`` by outcome (placed,
    taken, lapsed, late) and ``rerank_rejected_requests_total`` by reason (an early refusal
    counts as queue_time)."""
    text = httpx.get(f"{base_url}/metrics", headers={"authorization": f"Bearer {API_KEY}"}, timeout=30).text
    counts: dict[str, dict[str, float]] = {"holds": {}, "rejected": {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rerank_early_holds_total":
                counts["holds"][sample.labels["outcome"]] = sample.value
            elif sample.name == "rerank_rejected_requests_total":
                reason = sample.labels["reason"]
                counts["rejected"][reason] = counts["rejected"].get(reason, 0.0) + sample.value
    return counts


def _refusals(stack_log: Path) -> list[dict[str, Any]]:
    """Envoy's access-log entries for the 429s (a line it cut short is skipped)."""
    entries = []
    for line in stack_log.read_text(errors="replace").splitlines():
        entry = line.split("envoy | ", 1)[-1]
        if entry.startswith("{") and '"status":429' in entry:
            with contextlib.suppress(ValueError):
                entries.append(json.loads(entry))
    return entries


def gateway_refusals(stack_log: Path) -> list[float]:
    """Envoy's own time for each 429 (seconds; its access log's ``duration_ms``: from the
    request's first byte to the response's last, whole milliseconds): the refusal's latency
    without the client's share (its event loop's lag, sending the body)."""
    durations = []
    for entry in _refusals(stack_log):
        with contextlib.suppress(KeyError, ValueError, TypeError):
            durations.append(float(entry["duration_ms"]) / 1e3)
    return durations


def late_refusals(stack_log: Path) -> list[dict[str, Any]]:
    """Envoy's access-log entries for the 429s given after the body was read (not by the early
    check: its ``admission`` is not ``refused``), to tell what the check had done for each
    (held, admitted, unchecked; none for a body too small to be checked)."""
    return [e for e in _refusals(stack_log) if e.get("admission") != "refused"]


def _percentiles(values: list[float], which: tuple[float, ...]) -> dict[str, float | None]:
    if not values:
        return {f"p{q:g}": None for q in which}
    return {f"p{q:g}": float(np.percentile(values, q)) * 1e3 for q in which}


def summarise(
    records: list[tuple[str, int, float, str, float]],
    rss: list[tuple[float, int]],
    load_end: float,
    documents: int,
) -> dict[str, Any]:
    """Counts by outcome, latency percentiles (ms), RSS (MB) and throughput, and the targets."""
    outcomes = ("200", "429", "5xx", "4xx", "timeout", "connection", "bad")
    counts = {kind: dict.fromkeys(outcomes, 0) for kind in KINDS}
    for kind, _, _, outcome, _ in records:
        counts[kind][outcome] += 1
    ok = [s for k, _, _, o, s in records if o == "200" and k == "heavy"]
    refused = [s for k, _, _, o, s in records if o == "429" and k == "heavy"]
    refusal_probe = [s for k, _, _, o, s in records if o == "429" and k == "refusal"]
    probe = [s for k, _, _, _, s in records if k == "probe"]
    before = [b for t, b in rss if t < 0] or [rss[0][1]]
    after = [b for t, b in rss if t >= rss[-1][0] - 2.0]
    mb = 1 / 2**20
    start, peak, end = float(np.median(before)) * mb, max(b for _, b in rss) * mb, float(np.median(after)) * mb
    pairs = sum(1 if k == "probe" else documents for k, _, _, o, _ in records if o == "200")
    answered = all(o in ("200", "429") for _, _, _, o, _ in records)
    p429 = _percentiles(refused, (50, 95, 99))
    refusal_p = _percentiles(refusal_probe, (50, 95, 99))
    probe_p = {**_percentiles(probe, (50, 95)), "max": max(probe) * 1e3 if probe else None}
    targets = [
        ("every request answered 200 or 429 (no 5xx, timeout, connection error)", answered),
        (
            f"429 p99 < {TARGETS['429_p99_ms']:g} ms (the refusal probe's)",
            refusal_p["p99"] is not None and refusal_p["p99"] < TARGETS["429_p99_ms"],
        ),
        (
            f"probe p95 < {TARGETS['probe_p95_ms']:g} ms",
            probe_p["p95"] is not None and probe_p["p95"] < TARGETS["probe_p95_ms"],
        ),
        (f"RSS peak - start <= {TARGETS['rss_growth_mb']:g} MB", peak - start <= TARGETS["rss_growth_mb"]),
        (
            f"RSS end - start <= {TARGETS['rss_return_mb']:g} MB ({RSS_INTERVAL:g} s samples, last 2 s)",
            end - start <= TARGETS["rss_return_mb"],
        ),
    ]
    return {
        "counts": counts,
        "latency_200_ms": _percentiles(ok, (50, 95, 99)),
        "latency_429_ms": p429,
        "refusal_probe_429_ms": {"count": len(refusal_probe), **refusal_p},
        "probe_ms": probe_p,
        "rss_mb": {"start": start, "peak": peak, "end": end},
        "load_seconds": load_end,
        "pairs_per_s": pairs / load_end if load_end > 0 else 0.0,
        "targets": [{"target": name, "passed": bool(passed)} for name, passed in targets],
    }


def _lag(lags: list[float]) -> dict[str, float]:
    return {
        "p99": float(np.percentile(lags, 99)) * 1e3 if lags else 0.0,
        "max": max(lags) * 1e3 if lags else 0.0,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(summary: dict[str, Any], context: dict[str, Any]) -> str:
    c, s = summary["counts"], summary
    lines = [
        f"CPU: {context['cpu']}",
        f"load average before: {context['loadavg_before']}, after: {context['loadavg_after']}; "
        f"CPU during the load (cores busy): {context['cpu_use']}",
        f"model {context['model']} ({context['variant']}), {context['clients']} clients x "
        f"{context['documents']} documents of ~{context['words']} words for {context['seconds']:g} s, "
        f"probe every {context['probe_interval']:g} s; after a 429 a client waits "
        + (
            f"its Retry-After (at least {context['pause']:g} s)"
            if context.get("honour_retry_after")
            else f"{context['pause']:g} s (Retry-After ignored)"
        ),
        "",
        f"{'requests':12s} " + " ".join(f"{o:>10s}" for o in c["heavy"]),
    ]
    lines += [f"{kind:12s} " + " ".join(f"{n:>10d}" for n in c[kind].values()) for kind in KINDS]
    lines += [
        "",
        "heavy 200 latency ms  p50 {p50}  p95 {p95}  p99 {p99}".format(
            **{k: _ms(v) for k, v in s["latency_200_ms"].items()}
        ),
        "refusal probe 429 ms  p50 {p50}  p95 {p95}  p99 {p99} ({count} refusals)".format(
            **{k: v if k == "count" else _ms(v) for k, v in s["refusal_probe_429_ms"].items()}
        ),
        "heavy 429 latency ms  p50 {p50}  p95 {p95}  p99 {p99} (includes their own loop's lag, below)".format(
            **{k: _ms(v) for k, v in s["latency_429_ms"].items()}
        ),
        "  of which early      {count} (Envoy's check, body unread): p50 {p50}  p95 {p95}  p99 {p99}".format(
            **{k: v if k == "count" else _ms(v) for k, v in s.get("early_429", {"count": 0}).items()},
            **{k: "-" for k in ("p50", "p95", "p99") if k not in s.get("early_429", {})},
        ),
        "  Envoy's own time    {count} in its access log: p50 {p50}  p95 {p95}  p99 {p99} (first byte in to last "
        "byte out; the rest is the client's)".format(
            **{k: v if k == "count" else _ms(v) for k, v in s.get("gateway_429_ms", {"count": 0}).items()},
            **{k: "-" for k in ("p50", "p95", "p99") if k not in s.get("gateway_429_ms", {})},
        ),
        "  after the body      {late} refused after it was read; what Envoy's check had done: {checks}".format(
            late=sum(s.get("late_429_checks", {}).values()), checks=s.get("late_429_checks", {}) or "-"
        ),
        "early-check holds     {holds}; the service's refusals by reason: {rejected}".format(
            holds=s.get("holds") or "-", rejected=s.get("rejected") or "-"
        ),
        "probe latency ms      p50 {p50}  p95 {p95}  max {max}".format(**{k: _ms(v) for k, v in s["probe_ms"].items()}),
        "service RSS MB        start {start:.0f}  peak {peak:.0f}  end {end:.0f}".format(**s["rss_mb"]),
        f"throughput            {s['pairs_per_s']:.1f} pairs/s (200s' pairs over {s['load_seconds']:.1f} s, "
        "from the first request to the last answer)",
        "loop lag ms           heavy clients' p99 {h[p99]:.1f} max {h[max]:.1f}; the probes' p99 {p[p99]:.1f} max "
        "{p[max]:.1f}".format(h=context["client_lag_ms"], p=context.get("probe_lag_ms", {"p99": 0.0, "max": 0.0})),
        "",
    ]
    lines += [f"{'PASS' if t['passed'] else 'FAIL'}  {t['target']}" for t in s["targets"]]
    return "\n".join(lines)


def chart(records: Sequence[Sequence[Any]], rss: Sequence[Sequence[float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5.5))
    styles = {
        ("heavy", "200"): ("tab:green", "o"),
        ("heavy", "429"): ("tab:orange", "."),
        ("probe", "200"): ("tab:blue", "^"),
        ("probe", "429"): ("tab:purple", "^"),
        ("refusal", "200"): ("tab:olive", "s"),
        ("refusal", "429"): ("tab:brown", "s"),
    }
    groups: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for kind, _, start, outcome, seconds in records:
        key = (kind, outcome) if (kind, outcome) in styles else ("error", outcome)
        groups.setdefault(key, []).append((start + seconds, seconds * 1e3))
    for (kind, outcome), points in sorted(groups.items()):
        color, marker = styles.get((kind, outcome), ("tab:red", "x"))
        xs, ys = zip(*points, strict=True)
        ax.scatter(xs, ys, s=10, c=color, marker=marker, label=f"{kind} {outcome} ({len(points)})", alpha=0.7)
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the load started (at the answer)")
    ax.set_ylabel("latency, ms (log)")
    ax.legend(loc="upper left", fontsize=8)
    twin = ax.twinx()
    twin.plot([t for t, _ in rss], [b / 2**20 for _, b in rss], color="black", linewidth=1, label="service RSS")
    twin.set_ylabel("service RSS, MB")
    twin.legend(loc="upper right", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------- main


def _warm_up(base_url: str, model: str) -> str:
    """One 64-document request and one probe (the model's speed is then measured); returns the
    variant the service runs."""
    headers = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=600) as client:
        for count, words in ((64, 100), (1, 12)):
            query, documents = texts("overload/warm-up", count, words)
            client.post("/v1/rerank", content=request_body(model, query, documents)).raise_for_status()
        cards = client.get("/v1/models").json()["data"]
    card = next((c for c in cards if c.get("id") == model), {})
    return str(card.get("variant") or card.get("precision") or "?")


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    model = bench_models.ensure(args.model, log, gguf=False)
    log(f"starting rerank-stack on {model.name}")
    stack = start_stack(model, args.variant, workdir)
    workers: list[multiprocessing.process.BaseProcess] = []
    try:
        variant = _warm_up(stack.base_url, model.name)
        log(f"ready: {stack.base_url}, service pid {stack.service_pid} ({variant}); starting the clients")
        context = multiprocessing.get_context("spawn")
        pipes: list[Connection] = []
        groups = [list(range(args.clients))[i :: args.processes] for i in range(args.processes)]
        for group in groups:
            mine, theirs = context.Pipe()
            spec = {
                "clients": group,
                "documents": args.documents,
                "words": args.words,
                "model": model.name,
                "base_url": stack.base_url,
                "seconds": args.seconds,
                "pause": args.pause,
                "honour_retry_after": args.honour_retry_after,
                "timeout": args.timeout,
            }
            worker = context.Process(target=_heavy_worker, args=(theirs, spec), daemon=True)
            worker.start()
            workers.append(worker)
            pipes.append(mine)
        for pipe in pipes:
            if pipe.recv() != "ready":
                raise RuntimeError("a client process did not start")
        if args.realtime_probes:  # after the heavy clients started: they keep the normal policy
            os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(1))
        query, documents = texts("overload/refusal", args.documents, args.words)
        refusal_body = request_body(model.name, query, documents)
        loadavg_before = os.getloadavg()
        origin = time.monotonic() + args.before
        sampler = RssSampler(stack.service_pid, origin).start()
        for pipe in pipes:
            pipe.send(origin)
        time.sleep(max(0.0, origin - time.monotonic()))
        log(f"load: {args.clients} clients x {args.documents} documents for {args.seconds:g} s, and the probe")
        processes = {
            "service": psutil.Process(stack.service_pid),
            "envoy": psutil.Process(stack.envoy_pid),
            "bench": psutil.Process(),
        }
        cpu_start = {name: sum(p.cpu_times()[:2]) for name, p in processes.items()}
        machine_start = psutil.cpu_times()
        wall_start = time.monotonic()
        records, probe_lags = asyncio.run(
            _probe(
                stack.base_url,
                model.name,
                origin,
                args.seconds,
                args.probe_interval,
                args.timeout,
                {"body": refusal_body, "documents": args.documents, "interval": args.refusal_interval},
            )
        )
        worker_cpu = 0.0
        lags: list[float] = []
        early: list[float] = []
        for pipe in pipes:
            result = pipe.recv()
            records += result["records"]
            early += result["early"]
            worker_cpu += result["cpu_seconds"]
            lags += result["lags"]
        load_end = max(start + seconds for _, _, start, _, seconds in records)
        wall = time.monotonic() - wall_start
        machine_end = psutil.cpu_times()
        cpu_use = {name: (sum(p.cpu_times()[:2]) - cpu_start[name]) / wall for name, p in processes.items()}
        cpu_use["clients"] = cpu_use.pop("bench") + worker_cpu / wall
        busy = sum(machine_end) - sum(machine_start) - (machine_end.idle - machine_start.idle)
        busy -= getattr(machine_end, "iowait", 0.0) - getattr(machine_start, "iowait", 0.0)
        cpu_use["others"] = max(0.0, busy / wall - sum(cpu_use.values()))
        log(f"load over after {load_end:.1f} s; RSS for {args.after:g} s more")
        time.sleep(args.after)
        sampler.stop()
        loadavg_after = os.getloadavg()
        counts = service_counts(stack.base_url)
        late = late_refusals(workdir / "stack.log")
        gateway = gateway_refusals(workdir / "stack.log")
    finally:
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.kill()
        stack.child.stop(grace=30)
    summary = summarise(records, sampler.samples, load_end, args.documents)
    summary["early_429"] = {"count": len(early), **_percentiles(early, (50, 95, 99))}
    summary["gateway_429_ms"] = {"count": len(gateway), **_percentiles(gateway, (50, 95, 99))}
    summary.update(counts)
    summary["late_429_checks"] = dict(collections.Counter(str(e.get("admission")) for e in late))
    summary["late_429_entries"] = late[:10]
    return {
        "summary": summary,
        "context": {
            "cpu": cpu_summary(),
            "loadavg_before": [round(x, 2) for x in loadavg_before],
            "loadavg_after": [round(x, 2) for x in loadavg_after],
            "cpu_use": {k: round(v, 2) for k, v in cpu_use.items()},
            "model": model.name,
            "variant": variant,
            "clients": args.clients,
            "documents": args.documents,
            "words": args.words,
            "seconds": args.seconds,
            "probe_interval": args.probe_interval,
            "pause": args.pause,
            "honour_retry_after": args.honour_retry_after,
            "processes": args.processes,
            "realtime_probes": args.realtime_probes,
            "client_lag_ms": _lag(lags),
            "probe_lag_ms": _lag(probe_lags),
        },
        "records": [[k, i, round(t, 4), o, round(s, 5)] for k, i, t, o, s in sorted(records, key=lambda r: r[2])],
        "rss": [[round(t, 3), b] for t, b in sampler.samples],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = ("python -m bench.overload " + shlex.join(sys.argv[1:] if argv is None else argv)).strip()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds, so the stack is stopped
    with tempfile.TemporaryDirectory(prefix="rerank-overload-") as tmp:
        try:
            result = run(args, Path(tmp))
        finally:
            with contextlib.suppress(OSError):
                log_tail = (Path(tmp) / "stack.log").read_text(errors="replace")[-2000:]
                if "Traceback" in log_tail:
                    log(f"rerank-stack's log ends with:\n{log_tail}")
    text = table(result["summary"], result["context"])
    print(text, flush=True)
    stem = "-".join(
        ["overload"]
        + ([args.model] if args.model != DEFAULT_MODEL else [])
        + (["honour-retry-after"] if args.honour_retry_after else [])
    )
    c = result["context"]
    args.out.mkdir(parents=True, exist_ok=True)
    chart(
        result["records"],
        result["rss"],
        args.out / f"{stem}.png",
        f"{command}  ({c['cpu'].split(';')[0]}; load average before {c['loadavg_before'][0]})",
    )
    path = results.save(stem, {"date": results.now(), "command": command, "cpu": c["cpu"], **result}, args.out)
    log(f"wrote {path} and .png")
    return 0 if all(t["passed"] for t in result["summary"]["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
