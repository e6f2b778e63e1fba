"""What ``ov-int8-dynamic`` (int8 weights, activations rounded to int8 as it runs) buys against
``ov-fp32`` on one bench model: memory, speed, and the converter's gate.

    python -m bench.int8_dynamic                      # qwen3-0.6b-shape (~25 min on 2 cores)
    python -m bench.int8_dynamic --model qwen3-tiny   # the code in a minute, no figures

The int8 graph is written as the converter writes it (:mod:`rerank.converters.int8_weights`) into
a scratch copy of the model folder (beside it), so the gate cannot drop it. Each variant runs in a fresh
process on one OpenVINO stream over every thread (``/proc/self/status``, MiB): the gate's 309
probe pairs scored one at a time as the converter scores them (its resident set after the first:
the weights as OpenVINO holds them, packed at the first run), W1's 64 pairs and W3's 8 in
micro-batches of 8 (as ``bench.memory`` feeds them; the best of three for W3), and its resident
set at the end (the scratch memory of the largest shapes run included). The gate figures judge the int8 scores against
OpenVINO fp32's as the converter's gate judges a variant (the converter's reference is ONNX
Runtime fp32, within ~5e-6 of OpenVINO fp32 on these models). Writes
``bench/results/int8-dynamic-<model>.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import models as bench_models
from bench import results, workloads
from bench.measure import cpu_summary
from bench.memory import resident
from bench.peers import THREADS

VARIANTS = ("ov-fp32", "ov-int8-dynamic")


def scratch_folder(folder: Path, into: Path) -> Path:
    """A copy of ``folder`` (its files hard-linked) with the ``ov-int8-dynamic`` graph written and declared."""
    import onnx

    from rerank.converters import int8_weights, onnx_graph
    from rerank.converters.variants import FILES, candidate
    from rerank.service.model_folder import CONFIG_NAME, read_model_folder

    copy = into / folder.name
    copy.mkdir()
    model = onnx.load(str(folder / "model.onnx"))  # before the links: onnx refuses hard-linked weights
    int8_weights.compress(model)
    onnx_graph.save(model, copy / FILES["ov-int8-dynamic"])
    del model
    for item in folder.iterdir():
        if item.is_file() and item.name != CONFIG_NAME:
            os.link(item.resolve(), copy / item.name)  # OpenVINO reads no weights through a symlink out
    config = read_model_folder(folder)
    variants = {**config.variants, "ov-int8-dynamic": candidate("ov-int8-dynamic")}
    data = dataclasses.replace(config, variants=variants).to_json()
    (copy / CONFIG_NAME).write_text(json.dumps(data))
    return copy


def child(folder: Path, variant: str) -> None:
    """Runs ``variant`` of ``folder`` and prints one JSON line of figures."""
    from bench.prefix_sharing import micro_batches
    from rerank.converters.gate_probes import gate_pairs
    from rerank.service.backends.base import pad
    from rerank.service.backends.openvino import OpenVinoBackend
    from rerank.service.core.tokenization import PairEncoder
    from rerank.service.model_folder import read_model_folder

    config = read_model_folder(folder)
    encoder = PairEncoder(folder / "tokenizer.json", config.template, config.max_length)
    backend = OpenVinoBackend(folder, config, variant=variant, threads=THREADS, streams=1)
    figures: dict[str, Any] = {"compiled": resident(), "precision": backend.execution_precision}
    pairs, _ = gate_pairs()
    started = time.perf_counter()
    scores = []
    for query, document in pairs:
        batch = pad(encoder.encode(query, [document]).pairs, config.template.pad_id, config.type_ids_input)
        scores.append(float(backend.run(batch)[0]))
        if len(scores) == 1:  # OpenVINO packs the weights at the first run, not at compiling
            figures["first_pair"] = resident()
    figures["gate_seconds"] = time.perf_counter() - started
    figures["gate_scores"] = scores
    for name, repeats in (("W1", 1), ("W3", 3)):
        w = workloads.make(name)
        batches = micro_batches(encoder.encode(w.query, list(w.documents)).pairs, 8, config.template.pad_id)
        took = []
        for _ in range(repeats):
            started = time.perf_counter()
            for batch in batches:
                backend.run(batch)
            took.append(time.perf_counter() - started)
        figures[f"{name}_seconds"] = min(took)
    figures["after"] = resident()
    print(json.dumps(figures), flush=True)


def measure(folder: Path, variant: str) -> dict[str, Any]:
    found = subprocess.run(
        [sys.executable, "-m", "bench.int8_dynamic", "--child", str(folder), "--variant", variant],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return json.loads([line for line in found.stdout.splitlines() if line.startswith("{")][-1])


def chart(runs: dict[str, dict[str, Any]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    names = list(runs)
    held = [runs[n]["first_pair"] for n in names]
    axes[0].barh(names, [h["anon"] for h in held], color="#4f81bd", label="anonymous")
    axes[0].barh(
        names,
        [h["file"] for h in held],
        left=[h["anon"] for h in held],
        color="#b9cde5",
        label="file-mapped",
    )
    axes[0].set_xlabel("MiB resident holding the model (after one pair)")
    axes[0].legend(loc="lower right", fontsize=8)
    axes[1].barh(names, [runs[n]["W1_seconds"] for n in names], color="#9bbb59")
    axes[1].set_xlabel("W1 seconds (64 pairs, batches of 8)")
    for ax in axes:
        ax.invert_yaxis()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.int8_dynamic", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="qwen3-0.6b-shape", choices=(*bench_models.QWEN3, bench_models.REAL))
    p.add_argument("--out", type=Path, default=results.RESULTS, help="results folder (default: bench/results)")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        child(args.child, args.variant)
        return 0
    from rerank.converters.gate_probes import gate_pairs
    from rerank.converters.variants import gate_figures

    model = bench_models.ensure(args.model, gguf=False, variants=("ov-fp32",))
    # Beside the model folder: on its file system, so its files can be hard-linked.
    with tempfile.TemporaryDirectory(dir=model.folder.resolve().parent) as tmp:
        folder = scratch_folder(model.folder, Path(tmp))
        runs = {variant: measure(folder, variant) for variant in VARIANTS}
    _, groups = gate_pairs()
    reference = runs["ov-fp32"]["gate_scores"]
    for run in runs.values():
        gate = gate_figures(np.asarray(reference), np.asarray(run.pop("gate_scores")), groups)
        run["gate"] = {
            k: gate[k] for k in ("passed", "min_spearman", "all_top3_kept", "queries_top3_changed", "max_abs_diff")
        }
    fp32 = runs["ov-fp32"]
    print(f"{cpu_summary()}; {THREADS} threads, one stream; {model.name}; MiB: anonymous + file-mapped")
    print(f"{'variant':17}{'one pair':>14}{'at the end':>14}{'W1 s':>8}{'x':>6}{'W3 ms':>8}{'gate s':>8}  gate")
    for name, run in runs.items():
        g = run["gate"]
        verdict = (
            f"{'pass' if g['passed'] else 'fail'}: Spearman {g['min_spearman']:.4f}, "
            f"top 3 {'kept' if g['all_top3_kept'] else 'changed'}, max |Δ| {g['max_abs_diff']:.2g}"
        )
        memory = "".join(f"{run[s]['anon']:>7} + {run[s]['file']:<4}" for s in ("first_pair", "after"))
        speed = (
            f"{run['W1_seconds']:>8.1f}{fp32['W1_seconds'] / run['W1_seconds']:>6.2f}{run['W3_seconds'] * 1e3:>8.0f}"
        )
        print(f"{name:17}{memory}{speed}{run['gate_seconds']:>8.0f}  {verdict}")
    command = "python -m bench.int8_dynamic" + (f" --model {args.model}" if args.model != "qwen3-0.6b-shape" else "")
    record = {
        "date": results.now(),
        "command": command,
        "cpu": cpu_summary(),
        "threads": THREADS,
        "model": model.name,
        "runs": runs,
    }
    # The chart first: saving the record writes the index, which lists it beside the record.
    chart(
        runs,
        f"{model.name}: ov-int8-dynamic against ov-fp32\n{cpu_summary()}",
        args.out / f"int8-dynamic-{model.name}.png",
    )
    print(results.save(f"int8-dynamic-{model.name}", record, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
