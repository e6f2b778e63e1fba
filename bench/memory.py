"""What holding a model costs in memory: our OpenVINO backend's resident set, split into anonymous
memory (what only this process can use) and file-mapped pages (page cache: shared between
processes on a host, and reclaimable), with the weights beside the graph (``model.onnx.data``,
as the converter writes a graph over 64 MiB) against the same graph saved whole.

    python -m bench.memory                          # qwen3-0.6b-shape, variant ov-fp32
    python -m bench.memory --model qwen3-tiny       # the code in seconds, no figures

Each form is measured in a fresh process (``/proc/self/status``: RssAnon, RssFile) after
compiling, after the server's start-up timing and warm-up (:func:`rerank.service.server.calibrate`,
then the warm-up up to the micro-batch size it found), and after the micro-batches of W3 then W1
(8 pairs each, as ``bench.prefix_sharing`` feeds them). The whole form is a copy of the model folder with its
graph saved in one file. Writes ``bench/results/memory-<model>.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import models as bench_models
from bench import results, workloads
from bench.measure import cpu_summary
from bench.peers import THREADS

STAGES = ("compiled", "warm", "W3", "W1")


def resident() -> dict[str, int]:
    """This process's resident set in MiB: ``anon``, ``file`` and their sum ``rss``."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) // 1024
    return {"anon": fields["RssAnon"], "file": fields["RssFile"], "rss": fields["RssAnon"] + fields["RssFile"]}


def child(folder: Path, variant: str) -> None:
    """Loads ``variant`` of ``folder`` and prints one JSON line per stage."""
    from bench.prefix_sharing import micro_batches
    from rerank.service.backends.openvino import OpenVinoBackend
    from rerank.service.core.batching_config import BatchingConfig
    from rerank.service.core.tokenization import PairEncoder
    from rerank.service.model_folder import read_model_folder
    from rerank.service.server import calibrate

    config = read_model_folder(folder)
    encoder = PairEncoder(folder / "tokenizer.json", config.template, config.max_length)
    backend = OpenVinoBackend(folder, config, variant=variant, threads=THREADS)
    print(json.dumps({"stage": "compiled", **resident()}), flush=True)
    sizing = calibrate(backend, config, BatchingConfig())  # then warmed up as the server does
    backend.warm_up(sizing.batch_tokens)
    print(json.dumps({"stage": "warm", **resident()}), flush=True)
    for name in ("W3", "W1"):
        w = workloads.make(name)
        for batch in micro_batches(encoder.encode(w.query, list(w.documents)).pairs, 8, config.template.pad_id):
            backend.run(batch)
        print(json.dumps({"stage": name, **resident()}), flush=True)


def whole_copy(folder: Path, into: Path) -> Path:
    """``folder`` with its reference graph saved in one file (the weights inside it)."""
    import onnx

    copy = into / folder.name
    copy.mkdir()
    for item in folder.iterdir():
        if item.is_file() and not item.name.startswith("model.onnx"):
            shutil.copy2(item, copy / item.name)
    onnx.save_model(onnx.load(str(folder / "model.onnx")), str(copy / "model.onnx"))
    return copy


def measure(folder: Path, variant: str) -> dict[str, dict[str, int]]:
    found = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--child", str(folder), "--variant", variant],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [json.loads(line) for line in found.stdout.splitlines() if line.startswith("{")]
    return {row.pop("stage"): row for row in rows}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="qwen3-0.6b-shape", choices=(*bench_models.QWEN3, bench_models.REAL))
    p.add_argument("--variant", default="ov-fp32", help="an OpenVINO variant of the folder (default ov-fp32)")
    p.add_argument("--out", type=Path, default=results.RESULTS, help="results folder (default: bench/results)")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        child(args.child, args.variant)
        return 0
    model = bench_models.ensure(args.model, gguf=False, variants=(args.variant,))
    forms: dict[str, dict[str, dict[str, int]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        forms["weights beside the graph"] = measure(model.folder, args.variant)
        forms["weights inside the graph"] = measure(whole_copy(model.folder, Path(tmp)), args.variant)
    print(f"{cpu_summary()}; {THREADS} threads; {model.name}, {args.variant}; MiB: anonymous + file-mapped")
    print(f"{'form':26}" + "".join(f"{stage:>20}" for stage in STAGES))
    for form, stages in forms.items():
        cells = [f"{s['anon']} + {s['file']}" if (s := stages.get(stage)) else "" for stage in STAGES]
        print(f"{form:26}" + "".join(f"{cell:>20}" for cell in cells))
    command = "python -m bench.memory" + (f" --model {args.model}" if args.model != "qwen3-0.6b-shape" else "")
    record: dict[str, Any] = {
        "date": results.now(),
        "command": command + (f" --variant {args.variant}" if args.variant != "ov-fp32" else ""),
        "cpu": cpu_summary(),
        "threads": THREADS,
        "model": model.name,
        "variant": args.variant,
        "forms": forms,
    }
    print(results.save(f"memory-{model.name}", record, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
