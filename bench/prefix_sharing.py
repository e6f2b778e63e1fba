"""What reading each request's shared head once is worth to a decoder reranker: the plain graph
(every pair read whole) against the shared-prefix form (:mod:`rerank.converters.qwen3.graph`:
the prompt's prefix, instruction and query run once per micro-batch, each row only its document
and the suffix), on the same micro-batches of W1 and W3, both OpenVINO f32 (the variant the gate
serves at this shape).

    python -m bench.prefix_sharing                          # qwen3-0.6b-shape
    python -m bench.prefix_sharing --model qwen3-tiny       # the code in seconds, no figures

Both forms are built from the model's checkpoint. Pairs are sorted by length and cut into
micro-batches of ``--batch`` pairs (what the server does, at a fixed size here so that both forms
get identical batches), each fed as the backends feed it (:func:`rerank.service.backends.base.graph_feed`).
Rounds alternate the two forms and each keeps its best. It also reports the largest |Δ logit|
between the forms (they compute the same products on the same values) and the tokens each form
runs. Writes ``bench/results/prefix-sharing-<model>.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import models as bench_models
from bench import results, workloads
from bench.measure import cpu_summary
from bench.peers import THREADS
from rerank.converters.hf_checkpoint import load_checkpoint
from rerank.converters.onnx_graph import save
from rerank.converters.qwen3.graph import build_graph
from rerank.service.backends.base import Batch, graph_feed, pad
from rerank.service.core.tokenization import Pair, PairEncoder
from rerank.service.model_folder import (
    ATTENTION_MASK,
    INPUT_IDS,
    PREFIX_IDS,
    PREFIX_MASK,
    PREFIX_ROW,
    read_model_folder,
)

Feeds = list[dict[str, np.ndarray]]
PLAIN = (INPUT_IDS, ATTENTION_MASK)
SHARED = (PREFIX_IDS, PREFIX_MASK, PREFIX_ROW, INPUT_IDS, ATTENTION_MASK)


def micro_batches(pairs: list[Pair], batch: int, pad_id: int) -> list[Batch]:
    """``pairs`` sorted by length, as the server takes them, padded in micro-batches of ``batch``."""
    ordered = sorted(pairs, key=lambda p: len(p.ids))
    return [pad(ordered[start : start + batch], pad_id, with_types=False) for start in range(0, len(ordered), batch)]


def feeds(pairs: list[Pair], batch: int, pad_id: int) -> tuple[Feeds, Feeds, int, int]:
    """The plain and the shared-prefix forms' inputs for ``pairs`` in :func:`micro_batches` of
    ``batch``, and the tokens each form runs (padding included)."""
    batches = micro_batches(pairs, batch, pad_id)
    plain = [graph_feed(padded, PLAIN) for padded in batches]
    shared = [graph_feed(padded, SHARED) for padded in batches]
    return plain, shared, sum(b.work(False) for b in batches), sum(b.work(True) for b in batches)


def compile_f32(path: Path) -> Any:
    import openvino as ov

    properties = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": "LATENCY"}
    return ov.Core().compile_model(str(path), "CPU", properties)


def run(compiled: Any, batches: Feeds) -> tuple[float, np.ndarray]:
    """Seconds for every micro-batch of one request, and the logits in batch order."""
    request = compiled.create_infer_request()
    started = time.perf_counter()
    logits = [np.array(request.infer(feed)[compiled.output(0)], dtype=np.float64) for feed in batches]
    return time.perf_counter() - started, np.concatenate(logits)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.prefix_sharing", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="qwen3-0.6b-shape", choices=tuple(bench_models.QWEN3))
    p.add_argument("--batch", type=int, default=8, help="pairs per micro-batch (default 8)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, alternating the forms (default 3)")
    p.add_argument("--workloads", default="W1,W3", help="comma-separated, of W1, W3 (default W1,W3)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    model = bench_models.ensure(args.model, gguf=False, fresh=False)  # its tokenizer and template
    config = read_model_folder(model.folder)
    encoder = PairEncoder(model.folder / "tokenizer.json", config.template, config.max_length)
    loaded = load_checkpoint(str(model.checkpoint))
    forms = {}
    with tempfile.TemporaryDirectory() as tmp:
        for form in ("plain", "shared"):
            path = Path(tmp) / f"{form}.onnx"
            save(build_graph(loaded.spec, loaded.weights, shared_prefix=form == "shared"), path)
            forms[form] = compile_f32(path)
    rows: dict[str, dict[str, Any]] = {}
    for name in args.workloads.split(","):
        w = workloads.make(name)
        pairs = encoder.encode(w.query, list(w.documents)).pairs
        plain, shared, plain_tokens, shared_tokens = feeds(pairs, args.batch, config.template.pad_id)
        inputs = {"plain": plain, "shared": shared}
        best = {form: float("inf") for form in forms}
        logits: dict[str, np.ndarray] = {}
        for form in forms:  # warm-up: OpenVINO compiles kernels per shape
            run(forms[form], inputs[form])
        for r in range(args.rounds):
            for form in forms if r % 2 == 0 else reversed(forms):
                seconds, logits[form] = run(forms[form], inputs[form])
                best[form] = min(best[form], seconds)
        rows[name] = {
            "pairs": len(pairs),
            "head_tokens": int(min(f[PREFIX_IDS].shape[1] for f in shared)),
            "tokens_plain": plain_tokens,
            "tokens_shared": shared_tokens,
            "seconds_plain": round(best["plain"], 4),
            "seconds_shared": round(best["shared"], 4),
            "speedup": round(best["plain"] / best["shared"], 3),
            "max_abs_diff": float(np.abs(logits["plain"] - logits["shared"]).max()),
        }
    print(f"{cpu_summary()}; {THREADS} threads; {model.name}, OpenVINO f32, micro-batches of {args.batch} pairs")
    header = ("workload", "pairs", "head", "tokens plain", "shared", "s plain", "s shared", "speed-up", "max |Δ|")
    print("{:9} {:>5} {:>5} {:>13} {:>7} {:>9} {:>9} {:>9} {:>9}".format(*header))
    for name, row in rows.items():
        print(
            f"{name:9} {row['pairs']:5d} {row['head_tokens']:5d} {row['tokens_plain']:13d} {row['tokens_shared']:7d} "
            f"{row['seconds_plain']:9.3f} {row['seconds_shared']:9.3f} {row['speedup']:8.2f}x "
            f"{row['max_abs_diff']:9.2e}"
        )
    command = "python -m bench.prefix_sharing" + (f" --model {args.model}" if args.model != "qwen3-0.6b-shape" else "")
    record = {
        "date": results.now(),
        "command": command
        + (f" --batch {args.batch}" if args.batch != 8 else "")
        + (f" --rounds {args.rounds}" if args.rounds != 3 else ""),
        "cpu": cpu_summary(),
        "threads": THREADS,
        "rounds": args.rounds,
        "model": model.name,
        "batch": args.batch,
        "workloads": rows,
    }
    print(results.save(f"prefix-sharing-{model.name}", record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
