"""How much of this CPU's matrix throughput our variants use: the GEMM speed OpenVINO reaches on
one large product at f32 and at bf16 (AMX tiles or AVX-512 BF16 where the CPU has them), against
the speed each of a model's CPU variants reaches on the converter's timing batch.

    python -m bench.matrix_peak                          # minilm-ce
    python -m bench.matrix_peak --model qwen3-0.6b-shape

A variant's GFLOP/s counts 2 x the checkpoint's matrix parameters x the batch's tokens, as the
bench's tables do (attention's products left out, and so is the work a graph skips: the last
layer's rows no score reads), so it can only overstate how close a variant is to the peak. The
peak is measured, not taken from a data sheet: the best of a few chains of products of the sizes
these models multiply (:data:`CHAINS`) on the bench's threads. Writes ``bench/results/matrix-peak-<model>.json``.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import models as bench_models
from bench import results
from bench.measure import cpu_summary
from bench.peers import THREADS
from rerank.service.backends.base import graph_feed
from rerank.service.backends.loader import load_backend, measure, timing_batch
from rerank.service.backends.openvino import compile_variant
from rerank.service.model_folder import ModelFolderConfig, read_model_folder
from rerank.service.scoring import runs_natively

CHAINS = {
    "1024 -> 1024": (2048, (1024,) * 9),
    "1024 -> 3072 -> 1024": (2048, (1024, 3072) * 4 + (1024,)),
    "384 -> 1536 -> 384": (6144, (384, 1536) * 4 + (384,)),
}
"""Products the peak is the best of: ``rows`` x each width in turn, 8 products deep, so that
activations stay in the compute precision between products as they do in a model (a single
product converting its f32 input and output reaches a third of AMX's bf16 speed); the widths of
the bench's models (Qwen3-0.6B's 1024 and 3072, MiniLM's 384 and 1536)."""
REPS = 10


def peak_gflops(precision: str, threads: int = THREADS) -> dict[str, float]:
    """GFLOP/s of OpenVINO's CPU plugin on each of :data:`CHAINS` at inference precision
    ``precision`` (``f32`` or ``bf16``)."""
    return {name: chain_gflops(precision, rows, widths, threads=threads) for name, (rows, widths) in CHAINS.items()}


def chain_gflops(precision: str, rows: int, widths: tuple[int, ...], *, threads: int) -> float:
    """Best GFLOP/s over :data:`REPS` runs of ``rows`` x ``widths[0]`` multiplied through each
    ``widths[i] x widths[i + 1]`` weight in turn."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    x = ops.parameter([rows, widths[0]], np.float32, name="x")
    h = x
    for k, n in itertools.pairwise(widths):
        h = ops.matmul(h, ops.constant((rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)), False, False)
    compiled = ov.Core().compile_model(
        ov.Model([h], [x], "peak"),
        "CPU",
        {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1},
    )
    request = compiled.create_infer_request()
    feed = {0: rng.standard_normal((rows, widths[0])).astype(np.float32)}
    for _ in range(3):
        request.infer(feed)
    best = float("inf")
    for _ in range(REPS):
        start = time.perf_counter()
        request.infer(feed)
        best = min(best, time.perf_counter() - start)
    return 2.0 * rows * sum(k * n for k, n in itertools.pairwise(widths)) / best / 1e9


def op_times(folder: Path, config: ModelFolderConfig, key: str, runs: int = 5) -> list[dict[str, Any]]:
    """Where OpenVINO variant ``key`` spends a :func:`timing_batch` (its own per-node counters,
    best of ``runs``): milliseconds by node type and kernel, largest first."""
    variant = config.variants[key]
    properties = {"INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": "YES"}
    parts = [part for part, _ in compile_variant(folder, variant, properties)]
    requests = [part.create_infer_request() for part in parts]
    values = graph_feed(timing_batch(config), [port.get_any_name() for port in parts[0].inputs])
    best: dict[tuple[str, str], float] = {}
    for _ in range(runs):
        feed = {k: np.ascontiguousarray(v, dtype=np.int64) for k, v in values.items()}
        for part, request in zip(parts, requests, strict=True):
            result = request.infer({port.get_any_name(): feed[port.get_any_name()] for port in part.inputs})
            feed.update({port.get_any_name(): result[port] for port in part.outputs})
        times: collections.Counter[tuple[str, str]] = collections.Counter()
        for request in requests:
            for node in request.profiling_info:
                times[(node.node_type, node.exec_type)] += node.real_time.total_seconds() * 1e3
        if not best or sum(times.values()) < sum(best.values()):
            best = dict(times)
    whole = sum(best.values())
    return [
        {"node": node, "kernel": kernel, "milliseconds": round(ms, 2), "share": round(ms / whole, 3)}
        for (node, kernel), ms in sorted(best.items(), key=lambda item: -item[1])
        if ms > 0
    ]


def _total(nodes: list[dict[str, Any]]) -> float:
    return float(sum(node["milliseconds"] for node in nodes))


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.matrix_peak", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=bench_models.REAL, choices=bench_models.NAMES)
    p.add_argument("--rounds", type=int, default=3, help="rounds of peak and variants, alternating (default 3)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    model = bench_models.ensure(args.model, gguf=False)
    config = read_model_folder(model.folder)
    cpu_variants = [k for k, v in config.variants.items() if v.device in ("cpu", "any") and runs_natively(v)]
    backends = {
        key: load_backend(model.folder, config, variant=key, device="cpu", threads=THREADS) for key in cpu_variants
    }
    # The machine's speed drifts (by 2x within minutes on a shared host): rounds alternate the
    # peak and the variants, and each keeps its best.
    chains: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    split: dict[str, list[dict[str, Any]]] = {}
    """The fastest OpenVINO variant's :func:`op_times`, of the round where they summed least."""
    for _ in range(args.rounds):
        for precision in ("f32", "bf16"):
            for name, gflops in peak_gflops(precision).items():
                chains.setdefault(precision, {})[name] = max(gflops, chains.get(precision, {}).get(name, 0.0))
        for key, best in measure(backends, config).items():
            seconds[key] = min(best, seconds.get(key, float("inf")))
        on_openvino = [k for k in seconds if config.variants[k].runtime == "openvino"]
        fastest = min(on_openvino, key=lambda k: seconds[k], default=None)
        if fastest:
            nodes = op_times(model.folder, config, fastest)
            if fastest not in split or _total(nodes) < _total(split[fastest]):
                split = {fastest: nodes}
    peaks = {precision: max(by_chain.values()) for precision, by_chain in chains.items()}
    batch = timing_batch(config).input_ids.shape
    tokens = int(batch[0] * batch[1])
    rows = {}
    for key, best in seconds.items():
        gflops = 2.0 * model.matmul_params * tokens / best / 1e9
        rows[key] = {
            "precision": config.variants[key].precision,
            "milliseconds": round(best * 1e3, 2),
            "gflops": round(gflops, 1),
            "of_f32_peak": round(gflops / peaks["f32"], 3),
            "of_bf16_peak": round(gflops / peaks["bf16"], 3),
        }
    print(f"{cpu_summary()}; {THREADS} threads; {model.name}: batch {batch[0]} x {batch[1]}")
    for precision, by_chain in chains.items():
        each = ", ".join(f"{name} {gflops:.0f}" for name, gflops in by_chain.items())
        print(f"peak, OpenVINO {precision}: {peaks[precision]:.0f} GFLOP/s (chains: {each})")
    print(f"{'variant':16} {'precision':12} {'ms':>9} {'GFLOP/s':>8} {'of f32 peak':>12} {'of bf16 peak':>13}")
    for key, row in rows.items():
        print(
            f"{key:16} {row['precision']:12} {row['milliseconds']:9.1f} {row['gflops']:8.1f} "
            f"{row['of_f32_peak']:12.0%} {row['of_bf16_peak']:13.0%}"
        )
    for key, nodes in split.items():
        print(f"where {key} spends a batch on one stream (OpenVINO's per-node counters, {_total(nodes):.0f} ms):")
        for row in nodes[:10]:
            print(f"  {row['milliseconds']:8.1f} ms {row['share']:6.1%}  {row['node']} ({row['kernel']})")
    command = "python -m bench.matrix_peak" + (f" --model {args.model}" if args.model != bench_models.REAL else "")
    record = {
        "date": results.now(),
        "command": command,
        "cpu": cpu_summary(),
        "threads": THREADS,
        "rounds": args.rounds,
        "model": model.name,
        "matmul_params": model.matmul_params,
        "batch": [int(batch[0]), int(batch[1])],
        "peak_gflops": {k: round(v, 1) for k, v in peaks.items()},
        "chains_gflops": {p: {name: round(v, 1) for name, v in c.items()} for p, c in chains.items()},
        "variants": rows,
        "op_times": [{"variant": key, "nodes": nodes} for key, nodes in split.items()],
    }
    print(results.save(f"matrix-peak-{model.name}", record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
