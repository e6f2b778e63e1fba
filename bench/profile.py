"""Where the CPU time goes: our fused fp32 graph (ONNX Runtime's profiler) against the same
checkpoint in PyTorch (torch.profiler), on one W1-sized micro-batch, on the bench's threads.

    python -m bench.profile                  # bert-small
    python -m bench.profile --model bge-shape --pairs 8

Prints each side's time by operator kind and the GEMMs' achieved GFLOP/s against the machine's
estimated fp32 peak: if both sides spend most of their time in GEMMs running at a similar
fraction of the peak, no graph-level change can make one much faster than the other.
Writes ``bench/results/profile-<model>.json`` (``profile-<model>-<variant>.json`` for another variant).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench import models as bench_models
from bench import results
from bench.measure import cpu_summary, machine_peak
from bench.peers import THREADS
from rerank.service.model_folder import read_model_folder

GEMM_ORT = {"MatMul", "FusedMatMul", "Gemm", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
GEMM_TORCH = {"aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear"}


def profile_ours(folder: Path, variant: str, ids: np.ndarray, reps: int) -> dict[str, float]:
    config = read_model_folder(folder)
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(
        str(folder / config.variants[variant].file), options, providers=["CPUExecutionProvider"]
    )
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if "token_type_ids" in {i.name for i in session.get_inputs()}:
        feed["token_type_ids"] = np.zeros_like(ids)
    session.run(None, feed)  # warm-up, profiled too: dropped below by counting only the last reps
    for _ in range(reps):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in events if e.get("name") == "model_run"]
    last_start = runs[-reps]["ts"]
    by_op: dict[str, float] = collections.defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= last_start:
            by_op[event["args"]["op_name"]] += event["dur"] / 1e6 / reps
    by_op["(whole run)"] = sum(e["dur"] for e in runs[-reps:]) / 1e6 / reps
    return dict(by_op)


def profile_torch(checkpoint: Path, ids: np.ndarray, reps: int) -> dict[str, float]:
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(THREADS)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    inputs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.ones_like(torch.from_numpy(ids))}
    with torch.inference_mode():
        model(**inputs)
        started = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(reps):
                model(**inputs)
        whole = (time.perf_counter() - started) / reps
    by_op: dict[str, float] = collections.defaultdict(float)
    for avg in prof.key_averages():
        # Self time, so that nested calls (linear -> addmm) are not counted twice.
        by_op[avg.key] += avg.self_cpu_time_total / 1e6 / reps
    by_op["(whole run)"] = whole
    return dict(by_op)


def summarise(name: str, by_op: dict[str, float], gemms: set[str], flops: float, peak: float) -> dict:
    whole = by_op["(whole run)"]
    gemm = sum(t for op, t in by_op.items() if op in gemms)
    ranked = sorted(((t, op) for op, t in by_op.items() if op != "(whole run)"), reverse=True)[:8]
    print(
        f"\n{name}: {whole * 1e3:.0f} ms per batch, GEMMs {gemm / whole:.0%} of it, "
        f"GEMMs at {flops / gemm / 1e9:.0f} GFLOP/s = {flops / gemm / 1e9 / peak:.0%} of the "
        f"{peak:.0f} GFLOP/s peak; whole run {flops / whole / 1e9 / peak:.0%} of peak"
    )
    for t, op in ranked:
        print(f"    {op:40s} {t * 1e3:8.1f} ms  {t / whole:5.1%}")
    return {
        "seconds": whole,
        "gemm_seconds": gemm,
        "gemm_gflops": flops / gemm / 1e9,
        "top": [{"op": op, "seconds": t} for t, op in ranked],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="bert-small")
    parser.add_argument("--pairs", type=int, default=32, help="pairs per batch (W1 micro-batches hold ~35)")
    parser.add_argument("--length", type=int, default=230, help="tokens per pair (W1 pairs are ~230)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--variant", default="fp32-fused")
    args = parser.parse_args()
    model = bench_models.ensure(args.model)
    rng = np.random.default_rng(0)
    vocab = int(json.loads((model.checkpoint / "config.json").read_text())["vocab_size"])
    ids = rng.integers(5, vocab - 1, (args.pairs, args.length), dtype=np.int64)
    ids[:, 0] = 0
    machine = machine_peak()
    peak = machine.gflops
    print(f"peak: {peak:.0f} GFLOP/s ({machine.how})")
    flops = 2.0 * model.matmul_params * ids.size
    ours = summarise(
        f"ours ({args.variant}, ONNX Runtime)",
        profile_ours(model.folder, args.variant, ids, args.reps),
        GEMM_ORT,
        flops,
        peak,
    )
    torch_side = summarise(
        "PyTorch (transformers, what CrossEncoder.predict runs)",
        profile_torch(model.checkpoint, ids, args.reps),
        GEMM_TORCH,
        flops,
        peak,
    )
    print(f"\nours / PyTorch, same batch: {torch_side['seconds'] / ours['seconds']:.2f}x")
    record = {
        "args": vars(args),
        "peak_gflops": peak,
        "peak_how": machine.how,
        "flops_per_batch": flops,
        "ours": ours,
        "torch": torch_side,
    }
    command = "python -m bench.profile " + " ".join(sys.argv[1:])
    stem = f"profile-{args.model}" + ("" if args.variant == "fp32-fused" else f"-{args.variant}")
    out = results.save(stem, {"date": results.now(), "command": command.strip(), "cpu": cpu_summary(), **record})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
