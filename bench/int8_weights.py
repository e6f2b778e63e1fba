"""How far int8 *weights alone* move minilm-ce's scores: the floor under every int8 recipe.

``python -m bench.int8_weights`` compresses the real-weights bench model's fp32 graph
(:mod:`bench.models`: all-MiniLM-L6-v2's encoder with a seeded head) to int8 weights with NNCF
(``compress_weights``, INT8_SYM: symmetric, one scale per output channel), keeping the
activations in fp32 (OpenVINO f32, its dynamic activation quantisation off), so the only change
from the fp32 graph is the rounding of the weights. It does so for every linear layer, then
without the classification head, then without the FFN down projections (the layers measured
most sensitive; the converter's ``ov-int8`` keeps them in fp32), scores the converter's gate
probes (:mod:`rerank.converters.gate_probes`) with each, and prints each gate report against ONNX
Runtime fp32, as the converter's gate would judge a variant. Static int8 (the converter's
``ov-int8``) adds activation rounding on top of this, so a recipe can do no better than the
weights it rounds. Writes ``bench/results/int8-weights.json`` and ``.png``. About a minute
on 2 cores once the model is built.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench import models as bench_models
from bench import results as bench_results

RESULTS = bench_results.RESULTS
LAYERS = {
    "embeddings": [r"word_.*", r"pos_.*", r"gather_.*"],
    "head": [r"head_.*"],
    "down": [r".*_down_.*"],
}
"""``rerank.converters.onnx_graph`` node names of the layers a recipe keeps in fp32."""
RECIPES = {
    "every linear layer": ["embeddings"],
    "all but the head": ["embeddings", "head"],
    "all but the FFN down projections": ["embeddings", "down"],
}
"""Recipe -> the layers it leaves in fp32 (embeddings always: they are lookups, not products)."""


def weight_only(model_onnx: Path, out: Path, keep: list[str]) -> int:
    """Writes ``model_onnx`` with int8 weights, except the nodes of ``keep``; returns how many
    nodes were kept."""
    import nncf
    import onnx

    from rerank.converters.quiet import quiet_loggers

    model = onnx.load(str(model_onnx))
    kept = [n.name for n in model.graph.node if any(re.fullmatch(p, n.name) for k in keep for p in LAYERS[k])]
    # NNCF's progress bars and tables go to stdout: this script prints its own table.
    with quiet_loggers("nncf"), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        compressed = nncf.compress_weights(
            model, mode=nncf.CompressWeightsMode.INT8_SYM, ignored_scope=nncf.IgnoredScope(names=kept, validate=False)
        )
    onnx.save(compressed, str(out))
    return len(kept)


def score_openvino(folder: Path, file: str, pairs: list[tuple[str, str]]) -> np.ndarray:
    """float64 logits of ``folder/file`` on OpenVINO in f32, activations never quantised, one
    pair at a time, fed as the server feeds them."""
    import openvino as ov

    from rerank.service.backends.base import pad
    from rerank.service.core.tokenization import PairEncoder
    from rerank.service.model_folder import read_model_folder

    config = read_model_folder(folder)
    encoder = PairEncoder(folder / "tokenizer.json", config.template, config.max_length)
    properties = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2, "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
    compiled = ov.Core().compile_model(str(folder / file), "CPU", properties)
    names = {port.get_any_name() for port in compiled.inputs}
    request = compiled.create_infer_request()
    scores = []
    for query, document in pairs:
        batch = pad(encoder.encode(query, [document]).pairs, config.template.pad_id, config.type_ids_input)
        feed = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if "token_type_ids" in names and batch.token_type_ids is not None:
            feed["token_type_ids"] = batch.token_type_ids
        scores.append(float(np.asarray(request.infer(feed)[compiled.output(0)]).reshape(-1)[0]))
    return np.asarray(scores, dtype=np.float64)


def chart(results: dict[str, dict[str, Any]], limit: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.barh(names, [results[n]["max_abs_diff"] for n in names], color="#c0504d")
    ax.axvline(limit, color="black", linestyle="--", label=f"the gate's limit ({limit:g} logit)")
    ax.set_xlabel("max |Δ logit| against fp32 over the gate's probes")
    ax.set_title("minilm-ce: int8 weights alone (activations fp32)")
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.parse_args(argv)
    from bench.measure import cpu_summary
    from rerank.converters import gate_probes
    from rerank.service.model_folder import read_model_folder
    from rerank.service.scoring import score_pairs

    model = bench_models.ensure(bench_models.REAL, gguf=False)
    folder = model.models_dir / model.name
    config = read_model_folder(folder)
    pairs, groups = gate_probes.gate_pairs()
    print(f"{model.name}: scoring {len(pairs)} gate pairs ({len(set(groups))} queries) with ONNX Runtime fp32")
    reference = score_pairs(folder, config, pairs)
    results: dict[str, dict[str, Any]] = {}
    plain = score_openvino(folder, "model.onnx", pairs)
    report = gate_probes.gate_report(reference, plain, groups)
    results["none (OpenVINO f32, the control)"] = report
    for recipe, keep in RECIPES.items():
        file = "model.int8-weights.onnx"
        try:
            kept = weight_only(folder / "model.onnx", folder / file, keep)
            report = gate_probes.gate_report(reference, score_openvino(folder, file, pairs), groups)
        finally:
            (folder / file).unlink(missing_ok=True)
        results[f"int8 weights, {recipe}"] = {**report, "nodes_kept_fp32": kept}
    width = max(len(n) for n in results)
    print(f"\nCPU: {cpu_summary()}\n")
    print(f"{'weights rounded to int8':{width}s}  min Spearman  top 3     max |Δ|  max Δ/range  gate")
    for name, r in results.items():
        verdict = "pass" if gate_probes.passes(r) else "FAIL"
        print(
            f"{name:{width}s}  {r['min_spearman']:12.4f}  {'kept' if r['all_top3_kept'] else 'changed':7s}  "
            f"{r['max_abs_diff']:8.4f}  {100 * r['max_rel_diff']:10.1f} %  {verdict}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    chart(results, gate_probes.MAX_ABS_DIFF, RESULTS / "int8-weights.png")
    record = {"command": "python -m bench.int8_weights", "cpu": cpu_summary(), "model": model.name, "results": results}
    path = bench_results.save("int8-weights", {"date": bench_results.now(), **record})
    print(f"\nwrote {path} and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
