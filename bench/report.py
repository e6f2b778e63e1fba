"""Turning measurements into the results table, peer ratios, target checks and a chart."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.accuracy import NO_CELLS, Accuracy
from bench.measure import Measurement
from bench.models import DECODER, kind
from bench.peers import OURS, PEERS, SERVER_PEERS

FRONT_DOORS = ("grpc-auto", "rest-auto")
"""Our server as users call it (its own variant choice), over gRPC and REST via Envoy: the
ratio table compares each peer with these."""
THROUGHPUT_TARGETS = (
    # The default CPU path (the server's own, gated choice) >= 3x sentence-transformers on torch,
    # the exact fp32 path (either runtime) >= 1.3x it; every other server: SERVER_TARGET.
    ("grpc-auto", "st-fp32", 3.0),
    ("grpc-fp32", "st-fp32", 1.3),
    ("grpc-ov-fp32", "st-fp32", 1.3),
    ("grpc-ov-bf16", "st-fp32", 3.0),
    ("grpc-int8", "st-fp32", 3.0),
    ("grpc-fp32", "llama-f16", 1.5),
    ("grpc-int8", "llama-q8_0", 1.5),
)
"""(ours, peer, least W1 throughput ratio)."""
W2_TAIL = 1.5
"""W2: p99 / p50 of our default path at most this."""
LIBRARY_TARGET = ("st-ov", 1.5)
"""W1 and W2: the default path at least this times sentence-transformers' OpenVINO backend at
its default precision (with our served variant inside the gate)."""
SERVER_TARGET = 3.0
"""W1 and W2: the default path at least this times every other server (:data:`SERVER_PEERS`)."""
BEST_SERVER_W3 = 0.5
"""W3: the default path's p50 at most this share of the fastest other server's."""
DECODER_BEST_PEER = 2.0
"""A decoder model (Qwen3-Reranker), W1 and W2: the default path at least this times the best of
the other peers (the model card's code in fp32 and bf16, llama-server, vLLM)."""
DECODER_W3 = ("llama-f16", 0.5)
"""A decoder model, W3: the default path's p50 at most this share of llama-server's."""
EXACT_TARGET = ("grpc-fp32", "st-onnx", 1.3)
"""W1: our exact fp32 path against sentence-transformers' ONNX backend (the AVX2-only target)."""
COLUMNS = (
    "model",
    "workload",
    "peer",
    "pairs/s",
    "p50 ms",
    "p99 ms",
    "peak RSS MiB",
    "GFLOP/s",
    "% peak",
    "padding",
    "other CPU",
)


@dataclass(frozen=True)
class Target:
    """One goal from the issue, checked on one model."""

    model: str
    goal: str
    value: float
    limit: float
    at_least: bool
    """True: value must be >= limit; False: value must be <= limit."""
    unit: str

    @property
    def passed(self) -> bool:
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    def line(self) -> str:
        gap = self.value - self.limit
        verdict = "PASS" if self.passed else "MISS"
        bound = ">=" if self.at_least else "<="
        return (
            f"{verdict} {self.model}: {self.goal}: {self.value:.2f}{self.unit} (target {bound} "
            f"{self.limit:g}{self.unit}, gap {gap:+.2f}{self.unit})"
        )


def _index(measurements: list[Measurement]) -> dict[tuple[str, str, str], Measurement]:
    return {(m.model, m.peer, m.workload): m for m in measurements}


def speed_ratio(ours: Measurement, theirs: Measurement) -> float:
    """Ours against theirs on one workload: throughput ours / theirs (W1, W2: above 1 is
    faster), W3 p50 latency ours / theirs (below 1 is faster)."""
    if ours.workload == "W3":
        return ours.latency_ms(50) / theirs.latency_ms(50)
    return ours.pairs_per_s / theirs.pairs_per_s


def targets(
    measurements: list[Measurement], accuracy: dict[str, dict[str, dict[str, Any]]] | None = None
) -> list[Target]:
    """Every target whose measurements exist; ``accuracy[model][peer]`` (:class:`Accuracy` as
    JSON) adds whether our default path's scores pass the gate."""
    at = _index(measurements)
    out: list[Target] = []
    for model in dict.fromkeys(m.model for m in measurements):

        def get(peer: str, workload: str, model: str = model) -> Measurement | None:
            return at.get((model, peer, workload))

        def add(goal: str, value: float, limit: float, at_least: bool, unit: str = "x", model: str = model) -> None:
            out.append(Target(model, goal, value, limit, at_least, unit))

        served = (accuracy or {}).get(model, {}).get("grpc-auto")
        if served is not None:
            add("grpc-auto scores pass the gate (1 = yes)", float(served["gate"]), 1, True, "")
        if kind(model) == DECODER:
            for workload in ("W1", "W2"):
                auto = get("grpc-auto", workload)
                others = [m for p in PEERS if p not in OURS and (m := get(p, workload))]
                if auto and others:
                    best = max(others, key=lambda m: m.pairs_per_s)
                    goal = f"{workload} throughput grpc-auto / best peer ({best.peer})"
                    add(goal, speed_ratio(auto, best), DECODER_BEST_PEER, True)
                # The same against the peers whose scores pass the gate our variants must pass
                # (a peer in bf16 or q8_0 may not): both readings of "the best peer at the gate".
                verdicts = (accuracy or {}).get(model, {})
                within = [m for m in others if verdicts.get(m.peer, {}).get("gate")]
                if auto and within:
                    best = max(within, key=lambda m: m.pairs_per_s)
                    goal = f"{workload} throughput grpc-auto / best peer passing the gate ({best.peer})"
                    add(goal, speed_ratio(auto, best), DECODER_BEST_PEER, True)
            peer, limit = DECODER_W3
            a, b = get("grpc-auto", "W3"), get(peer, "W3")
            if a and b:
                add(f"W3 p50 grpc-auto / {peer}", speed_ratio(a, b), limit, False)
        else:
            for workload in ("W1", "W2"):
                for peer, limit in (LIBRARY_TARGET, *((p, SERVER_TARGET) for p in SERVER_PEERS)):
                    a, b = get("grpc-auto", workload), get(peer, workload)
                    if a and b:
                        add(f"{workload} throughput grpc-auto / {peer}", speed_ratio(a, b), limit, True)
            servers = [m for p in SERVER_PEERS if (m := get(p, "W3"))]
            auto = get("grpc-auto", "W3")
            if auto and servers:
                best = min(servers, key=lambda m: m.latency_ms(50))
                add(f"W3 p50 grpc-auto / fastest server ({best.peer})", speed_ratio(auto, best), BEST_SERVER_W3, False)
            ours, peer, limit = EXACT_TARGET
            a, b = get(ours, "W1"), get(peer, "W1")
            if a and b:
                add(f"W1 throughput {ours} / {peer} (AVX2-only CPUs)", speed_ratio(a, b), limit, True)

            for ours, peer, limit in THROUGHPUT_TARGETS:
                a, b = get(ours, "W1"), get(peer, "W1")
                if a and b:
                    out.append(
                        Target(model, f"W1 throughput {ours} / {peer}", a.pairs_per_s / b.pairs_per_s, limit, True, "x")
                    )
        rest, grpc = get("rest-fp32", "W3"), get("grpc-fp32", "W3")
        if rest and grpc:
            out.append(
                Target(
                    model, "W3 p50 REST via Envoy - gRPC", rest.latency_ms(50) - grpc.latency_ms(50), 1.0, False, " ms"
                )
            )
        for ours in ("grpc-auto", "grpc-fp32", "grpc-int8"):
            w1, w2 = get(ours, "W1"), get(ours, "W2")
            if w1 and w2:
                out.append(Target(model, f"W2 / W1 throughput {ours}", w2.pairs_per_s / w1.pairs_per_s, 1.0, True, "x"))
            if w2:
                tail = W2_TAIL if ours == "grpc-auto" else 3.0
                out.append(
                    Target(model, f"W2 p99 / p50 {ours}", w2.latency_ms(99) / w2.latency_ms(50), tail, False, "x")
                )
    return out


def ratios(measurements: list[Measurement]) -> list[tuple[str, str, str, str, float]]:
    """(model, workload, ours, peer, ours / peer throughput) for the pairs of :data:`THROUGHPUT_TARGETS`,
    on every workload both ran."""
    at = _index(measurements)
    return sorted(
        (model, workload, ours, peer, at[(model, ours, workload)].pairs_per_s / theirs.pairs_per_s)
        for (model, peer, workload), theirs in at.items()
        for ours, compared, _ in THROUGHPUT_TARGETS
        if compared == peer and (model, ours, workload) in at
    )


def spreads(measurements: list[Measurement]) -> dict[tuple[str, str, str, str], tuple[float, float, float, int]]:
    """For each ratio of :func:`ratios` on a one-client workload (W1, W3): the per-request ratios
    ``their latency / ours`` of the requests sent in the same position of the same repetition
    (peers take turns within a repetition), as (median, min, max, count). On a shared machine
    the spread says how far one run's ratio can be trusted."""
    at = _index(measurements)
    out = {}
    for model, workload, ours, peer, _ in ratios(measurements):
        a, b = at[(model, ours, workload)], at[(model, peer, workload)]
        if workload == "W2" or not a.latencies or len(a.latencies) != len(b.latencies):
            continue
        per = np.asarray(b.latencies) / np.asarray(a.latencies)
        out[(model, workload, ours, peer)] = (float(np.median(per)), float(per.min()), float(per.max()), len(per))
    return out


def rows(measurements: list[Measurement], models: dict[str, dict[str, Any]], peak_gflops: float) -> list[list[str]]:
    """The results table's cells, one row per (model, workload, peer)."""
    out = []
    for m in measurements:
        info = models[m.model]
        gflops = m.gflops(info["matmul_params"])
        padding = f"{info['padding'][m.workload]:.1%}" if m.peer in OURS else ""
        out.append(
            [
                m.model,
                m.workload,
                m.peer,
                f"{m.pairs_per_s:.3g}",
                f"{m.latency_ms(50):.1f}",
                f"{m.latency_ms(99):.1f}",
                f"{m.peak_rss / 2**20:.0f}",
                f"{gflops:.1f}",
                f"{gflops / peak_gflops:.0%}",
                padding,
                f"{m.other_cpu:.0%}",
            ]
        )
    return out


COMPARISON_COLUMNS = (
    "model",
    "peer",
    "precision",
    "W1 pairs/s",
    "W1 ours/peer",
    "W2 pairs/s",
    "W2 ours/peer",
    "W3 p50 ms",
    "W3 p50 ours/peer",
    "min Spearman",
    "top-3 kept",
    "max |Δ logit|",
    "gate",
)
"""The ratio table: ``ours/peer`` is grpc-auto's ratio, then rest-auto's after a slash."""


def comparison(
    measurements: list[Measurement],
    accuracy: dict[str, dict[str, dict[str, Any]]] | None = None,
    failed: dict[str, dict[str, str]] | None = None,
) -> list[list[str]]:
    """One row per (model, peer): W1 and W2 pairs/s and W3 p50, each with our front doors'
    ratios (:func:`speed_ratio`, grpc-auto / rest-auto), and the peer's accuracy on the probes;
    then a row per peer in ``failed[model]`` (peer -> why it did not start, a line), saying so."""
    at = _index(measurements)
    out = []
    for model in dict.fromkeys(m.model for m in measurements):
        peers = [p for p in PEERS if any((model, p, w) in at for w in ("W1", "W2", "W3"))]
        for peer in peers:
            cells = [model, peer, next(m.precision for (mo, p, _), m in at.items() if (mo, p) == (model, peer))]
            for workload in ("W1", "W2", "W3"):
                theirs = at.get((model, peer, workload))
                if theirs is None:
                    cells += ["", ""]
                    continue
                cells.append(f"{theirs.latency_ms(50):.1f}" if workload == "W3" else f"{theirs.pairs_per_s:.3g}")
                ratios = [
                    f"{speed_ratio(at[(model, door, workload)], theirs):.2f}x"
                    for door in FRONT_DOORS
                    if (model, door, workload) in at and peer not in OURS
                ]
                cells.append(" / ".join(ratios))
            figures = (accuracy or {}).get(model, {}).get(peer)
            cells += Accuracy(**figures).cells() if figures else NO_CELLS
            out.append(cells)
    for model, peers in (failed or {}).items():
        for peer, why in peers.items():
            out.append([model, peer, f"not measured: {why}", *[""] * (len(COMPARISON_COLUMNS) - 3)])
    return out


def markdown(
    table: list[list[str]],
    ratio_rows: list[tuple[str, str, str, str, float]],
    checks: list[Target],
    notes: list[str],
    command: str,
    spread: dict[tuple[str, str, str, str], tuple[float, float, float, int]] | None = None,
    *,
    compared: list[list[str]] | None = None,
    cpu: str = "",
    date: str = "",
) -> str:
    """The whole report as Markdown: the CPU, the ratio table with accuracy, then every figure."""
    lines = [f"# Rerank benchmark\n\n`{command}`\n\n{date}; CPU: {cpu}\n"]
    if compared:
        lines += [
            "## Ours against each peer (ours/peer: grpc-auto / rest-auto; accuracy against transformers fp32)",
            "",
            "| " + " | ".join(c.replace("|", "\\|") for c in COMPARISON_COLUMNS) + " |",
            "|" + "---|" * len(COMPARISON_COLUMNS),
        ]
        lines += ["| " + " | ".join(row) + " |" for row in compared]
        lines.append("")
    lines += ["## Every figure", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    lines += [
        "",
        "## Throughput ratios (ours / peer, same workload)",
        "",
        "| model | workload | ours | peer | ratio | per request: median [min–max] (n) |",
        "|---|---|---|---|---|---|",
    ]
    spread = spread or {}

    def cell(key: tuple[str, str, str, str]) -> str:
        if key not in spread:
            return ""
        median, low, high, n = spread[key]
        return f"{median:.2f}x [{low:.2f}–{high:.2f}] ({n})"

    lines += [f"| {m} | {w} | {o} | {p} | {r:.2f}x | {cell((m, w, o, p))} |" for m, w, o, p, r in ratio_rows]
    lines += ["", "## Targets", ""] + [f"- {t.line()}" for t in checks]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def print_console(
    table: list[list[str]],
    ratio_rows: list[tuple[str, str, str, str, float]],
    checks: list[Target],
    compared: list[list[str]] | None = None,
    cpu: str = "",
) -> None:
    """The tables, ratios and PASS/MISS lines on the terminal."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 200))
    results = Table(title="Rerank benchmark")
    for column in COLUMNS:
        results.add_column(column, justify="left" if column in ("model", "workload", "peer") else "right")
    for row in table:
        results.add_row(*row)
    console.print(results)
    for model, workload, ours, peer, ratio in ratio_rows:
        console.print(f"{model} {workload}: {ours} / {peer} = {ratio:.2f}x")
    if compared:
        versus = Table(title=f"Ours against each peer (ours/peer: grpc-auto / rest-auto)\nCPU: {cpu}")
        for column in COMPARISON_COLUMNS:
            versus.add_column(column, justify="left" if column in ("model", "peer", "precision") else "right")
        for row in compared:
            versus.add_row(*row)
        console.print(versus)
    for check in checks:
        console.print(("[green]" if check.passed else "[red]") + check.line(), highlight=False)


def chart(
    measurements: list[Measurement],
    path: Path,
    cpu: str = "",
    accuracy: dict[str, dict[str, dict[str, Any]]] | None = None,
) -> None:
    """PNG: per model, pairs/s of every peer on W1 and W2, and W3 p50 latency; each peer labelled
    with its precision and gate verdict on the probes, the CPU line on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(m.model for m in measurements))
    fig, axes = plt.subplots(len(models), 2, figsize=(13, 4 * len(models)), squeeze=False)
    for (left, right), model in zip(axes, models, strict=False):
        mine = [m for m in measurements if m.model == model]
        peers = list(dict.fromkeys(m.peer for m in mine if m.workload != "W3"))
        verdicts = (accuracy or {}).get(model, {})
        label = {
            m.peer: f"{m.peer}\n{m.precision}"
            + (f", gate {'pass' if verdicts[m.peer]['gate'] else 'FAIL'}" if m.peer in verdicts else "")
            for m in mine
        }
        for offset, workload in ((-0.2, "W1"), (0.2, "W2")):
            values = {m.peer: m.pairs_per_s for m in mine if m.workload == workload}
            if not values:
                continue
            bars = left.bar(
                [i + offset for i, p in enumerate(peers) if p in values],
                [values[p] for p in peers if p in values],
                width=0.4,
                label=workload,
            )
            left.bar_label(bars, fmt="%.3g", fontsize=8)
        left.set_xticks(range(len(peers)), [label[p] for p in peers], rotation=30, fontsize=7, ha="right")
        left.set_ylabel("pairs/s")
        left.set_title(f"{model}: throughput (64 docs x ~150 words)")
        left.legend()
        w3 = [m for m in mine if m.workload == "W3"]
        right.bar_label(
            right.bar([label[m.peer] for m in w3], [m.latency_ms(50) for m in w3], color="tab:green"),
            fmt="%.0f",
            fontsize=8,
        )
        right.tick_params(axis="x", rotation=30, labelsize=7)
        right.set_ylabel("ms")
        right.set_title(f"{model}: W3 p50 latency (8 short docs)")
    if cpu:
        fig.suptitle(f"CPU: {cpu}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
