"""Turning measurements into the results table, peer ratios, target checks and a chart."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.measure import Measurement

OURS = ("grpc-auto", "grpc-fp32", "grpc-ov-fp32", "grpc-ov-bf16", "rest-fp32", "grpc-int8")
THROUGHPUT_TARGETS = (
    # Issue 11: the default CPU path (the server's own, gated choice) >= 3x both PyTorch peers,
    # the exact fp32 path (either runtime) >= 1.3x sentence-transformers.
    ("grpc-auto", "st-fp32", 3.0),
    ("grpc-auto", "infinity-fp32", 3.0),
    ("grpc-fp32", "st-fp32", 1.3),
    ("grpc-ov-fp32", "st-fp32", 1.3),
    ("grpc-ov-bf16", "st-fp32", 3.0),
    ("grpc-int8", "st-fp32", 3.0),
    ("grpc-fp32", "llama-f16", 1.5),
    ("grpc-int8", "llama-q8_0", 1.5),
)
"""(ours, peer, least W1 throughput ratio)."""
W2_THROUGHPUT_TARGET = ("grpc-auto", "infinity-fp32", 3.0)
"""W2: the default path's throughput under 8 concurrent clients against Infinity's."""
W2_TAIL = 1.5
"""W2: p99 / p50 of our default path at most this."""
W3_LATENCY_TARGET = ("grpc-auto", "infinity-fp32", 0.5)
"""W3: our default path's p50 at most this share of Infinity's."""
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


def targets(measurements: list[Measurement]) -> list[Target]:
    """Every target whose measurements exist."""
    at = _index(measurements)
    out: list[Target] = []
    for model in dict.fromkeys(m.model for m in measurements):

        def get(peer: str, workload: str, model: str = model) -> Measurement | None:
            return at.get((model, peer, workload))

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
        ours, peer, limit = W2_THROUGHPUT_TARGET
        a, b = get(ours, "W2"), get(peer, "W2")
        if a and b:
            out.append(Target(model, f"W2 throughput {ours} / {peer}", a.pairs_per_s / b.pairs_per_s, limit, True, "x"))
        ours, peer, limit = W3_LATENCY_TARGET
        a, b = get(ours, "W3"), get(peer, "W3")
        if a and b:
            out.append(Target(model, f"W3 p50 {ours} / {peer}", a.latency_ms(50) / b.latency_ms(50), limit, False, "x"))
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


def markdown(
    table: list[list[str]],
    ratio_rows: list[tuple[str, str, str, str, float]],
    checks: list[Target],
    notes: list[str],
    command: str,
    spread: dict[tuple[str, str, str, str], tuple[float, float, float, int]] | None = None,
) -> str:
    """The whole report as Markdown."""
    lines = [f"# Rerank benchmark\n\n`{command}`\n", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
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
    table: list[list[str]], ratio_rows: list[tuple[str, str, str, str, float]], checks: list[Target]
) -> None:
    """The table, ratios and PASS/MISS lines on the terminal."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 150))
    results = Table(title="Rerank benchmark")
    for column in COLUMNS:
        results.add_column(column, justify="left" if column in ("model", "workload", "peer") else "right")
    for row in table:
        results.add_row(*row)
    console.print(results)
    for model, workload, ours, peer, ratio in ratio_rows:
        console.print(f"{model} {workload}: {ours} / {peer} = {ratio:.2f}x")
    for check in checks:
        console.print(("[green]" if check.passed else "[red]") + check.line(), highlight=False)


def chart(measurements: list[Measurement], path: Path) -> None:
    """PNG: per model, pairs/s of every peer on W1 and W2, and W3 p50 latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(m.model for m in measurements))
    fig, axes = plt.subplots(len(models), 2, figsize=(13, 4 * len(models)), squeeze=False)
    for (left, right), model in zip(axes, models, strict=False):
        mine = [m for m in measurements if m.model == model]
        peers = list(dict.fromkeys(m.peer for m in mine if m.workload != "W3"))
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
        left.set_xticks(range(len(peers)), peers, rotation=20)
        left.set_ylabel("pairs/s")
        left.set_title(f"{model}: throughput (64 docs x ~150 words)")
        left.legend()
        w3 = [m for m in mine if m.workload == "W3"]
        right.bar_label(
            right.bar([m.peer for m in w3], [m.latency_ms(50) for m in w3], color="tab:green"), fmt="%.0f", fontsize=8
        )
        right.tick_params(axis="x", rotation=20)
        right.set_ylabel("ms")
        right.set_title(f"{model}: W3 p50 latency (8 short docs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
