"""One OpenVINO stream on every thread against two streams on half the threads each, for a model
served as the server serves it: the start-up sizing for that many streams, the warm-up, then
the batcher composing micro-batches (a small request split over idle streams).

    python -m bench.streams                                 # qwen3-0.6b-shape and minilm-ce
    python -m bench.streams --models qwen3-tiny --w3 3      # the code in seconds, no figures

Each (model, streams) runs in a fresh process: W3 ``--w3`` times (each request its own query,
``bench.workloads.query``) for its p50, then W1 ``--w1`` times for its mean. Two streams pay
where one stream's threads would wait for each other at every operator (small operators); one
stream pays where the operators are large enough to share well (docs/performance.md, "Batching").
Writes ``bench/results/streams.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import models as bench_models
from bench import results, workloads
from bench.measure import cpu_summary
from bench.peers import THREADS

STREAMS = (1, 2)


async def _serve(folder: Path, variant: str, streams: int, w3: int, w1: int) -> dict[str, Any]:
    from rerank.service.backends.openvino import OpenVinoBackend
    from rerank.service.core.batching_config import BatchingConfig
    from rerank.service.core.reranker import ServedModel
    from rerank.service.core.tokenization import TokenizerPool
    from rerank.service.model_folder import read_model_folder
    from rerank.service.server import calibrate

    config = read_model_folder(folder)
    backend = OpenVinoBackend(folder, config, variant=variant, threads=THREADS, streams=streams)
    batching = BatchingConfig()
    sizing = calibrate(backend, config, batching)
    backend.warm_up(sizing.batch_tokens)
    pool = TokenizerPool(threads=1, max_waiting=4)
    served = ServedModel(folder, config, backend, batching=batching, tokenizers=pool, sizing=sizing)
    record: dict[str, Any] = {"streams": backend.streams, "batch_tokens": sizing.batch_tokens}
    try:
        for name, times in (("W3", w3), ("W1", w1)):
            workload = workloads.make(name)
            await served.score(workload.query, list(workload.documents))  # warm: its shapes' kernels
            seconds = []
            for n in range(1, times + 1):
                started = time.perf_counter()
                await served.score(workloads.query(workload, n), list(workload.documents))
                seconds.append(time.perf_counter() - started)
            record[name] = seconds
    finally:
        await served.close()
        pool.shutdown()
    return record


def measure(folder: Path, variant: str, streams: int, w3: int, w1: int) -> dict[str, Any]:
    options = ["--variant", variant, "--streams", str(streams), "--w3", str(w3), "--w1", str(w1)]
    found = subprocess.run(
        [sys.executable, "-m", "bench.streams", "--child", str(folder), *options],
        capture_output=True,
        text=True,
        check=True,
    )
    record: dict[str, Any] = json.loads(found.stdout.splitlines()[-1])
    return record


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__.split("\n\n")[0])
    choices = (*bench_models.QWEN3, bench_models.REAL)
    p.add_argument("--models", nargs="+", default=["qwen3-0.6b-shape", bench_models.REAL], choices=choices)
    p.add_argument("--variant", default="ov-fp32", help="an OpenVINO variant of each folder (default ov-fp32)")
    p.add_argument("--w3", type=int, default=10, help="W3 requests timed (default 10)")
    p.add_argument("--w1", type=int, default=2, help="W1 requests timed (default 2)")
    p.add_argument("--out", type=Path, default=results.RESULTS, help="results folder (default: bench/results)")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--streams", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        print(json.dumps(asyncio.run(_serve(args.child, args.variant, args.streams, args.w3, args.w1))))
        return 0
    runs: dict[str, dict[str, Any]] = {}
    print(f"{cpu_summary()}; {THREADS} threads; variant {args.variant}")
    print(f"{'model':18}{'streams':>8}{'batch tokens':>14}{'W3 p50 ms':>11}{'W1 mean s':>11}")
    for name in args.models:
        folder = bench_models.ensure(name, gguf=False, fresh=False, variants=(args.variant,)).folder
        for streams in STREAMS:
            row = measure(folder, args.variant, streams, args.w3, args.w1)
            runs[f"{name}/{streams}"] = row
            w3, w1 = statistics.median(row["W3"]) * 1e3, statistics.mean(row["W1"])
            print(f"{name:18}{streams:>8}{row['batch_tokens']:>14}{w3:>11.1f}{w1:>11.2f}", flush=True)
    command = f"python -m bench.streams --models {' '.join(args.models)} --w3 {args.w3} --w1 {args.w1}"
    record = {
        "date": results.now(),
        "command": command + (f" --variant {args.variant}" if args.variant != "ov-fp32" else ""),
        "cpu": cpu_summary(),
        "threads": THREADS,
        "variant": args.variant,
        "runs": runs,
    }
    print(results.save("streams", record, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
