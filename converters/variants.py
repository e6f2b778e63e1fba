"""Optimised graph variants, each written only if it passes the accuracy gate against fp32.

ONNX Runtime (``Variant.runtime = "onnxruntime"``):

* ``fp32-fused``: attention as ONNX Runtime's MultiHeadAttention kernel (built in by the
  family's graph builder: :func:`rerank.converters.onnx_graph.build_graph` for the encoders),
  then ONNX Runtime's transformer fusions (SkipLayerNormalization, BiasGelu). Same math as fp32.
* ``int8``: dynamic int8 quantisation of the fused graph's weight matrices, for the CPU.
* ``fp16``: the fused graph in float16 (inputs and outputs stay as they are), for CUDA.

A family without a fused graph (the Qwen3-Reranker decoder: its attention is grouped-query and
causal, which the encoders' MultiHeadAttention fusion does not cover) skips ``fp32-fused`` and
derives ``int8`` and ``fp16`` from ``model.onnx`` instead.

OpenVINO (``runtime = "openvino"``, CPU; :mod:`rerank.service.backends.openvino`; needs the extra
``openvino``, else these are skipped with a message):

* ``ov-fp32``: the plain ``model.onnx`` at precision f32 (no new file);
* ``ov-bf16``: the same file at precision bf16 (AMX / AVX-512 BF16);
* ``ov-bf16-split``: the graph cut before its last layer(s), what comes before at precision
  bf16 and the rest (the last layer computing only the first token's row) at f32;
* ``ov-bf16-mixed``: casts around chosen weight products put those in bf16, the rest of the
  graph runs at f32;

  both from :mod:`rerank.converters.mixed_precision`, each with its own recipes, gated fastest
  first, the first that passes kept; neither is built where ``ov-bf16`` passed (all in bf16 is
  faster);
* ``ov-int8-dynamic``: weights stored in int8 (:mod:`rerank.converters.int8_weights`), which
  OpenVINO keeps in int8 and multiplies with activations it rounds to int8 at run time: a
  quarter of the weights' memory and the int8 units' speed, with nothing to calibrate;
* ``ov-int8``: a static int8 graph from NNCF (:mod:`rerank.converters.quantize`, extra ``quantize``);
  not in :data:`DEFAULT`: calibration costs minutes on a large model, and int8 often fails the
  gate on trained encoders.

The gate (:mod:`rerank.converters.gate_probes`): each variant scores the ~300 gate pairs through the
serving path, and passes only if every query keeps Spearman >= 0.99 and its top 3 against the
fp32 graph (ONNX Runtime, ``model.onnx``), and max |Δ logit| <= 0.05. The figures go into
``rerank.json`` whether the variant passed or not (``verification.variant_gates``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from rerank.converters import families, gate_probes, int8_weights, mixed_precision, onnx_graph
from rerank.converters.gate_probes import spearman as spearman  # re-exported: tests rank-compare with it
from rerank.converters.memory import release_memory
from rerank.converters.quiet import quiet_onnxruntime_tools
from rerank.converters.spec import LoadedModel
from rerank.service.model_folder import GATE_VERSION, ONNXRUNTIME, OPENVINO, ModelFolderConfig, Variant

KNOWN = (
    "fp32-fused",
    "int8",
    "fp16",
    "ov-fp32",
    "ov-bf16",
    "ov-bf16-split",
    "ov-bf16-mixed",
    "ov-int8-dynamic",
    "ov-int8",
)
DEFAULT = ("fp32-fused", "int8", "fp16", "ov-fp32", "ov-bf16", "ov-bf16-split", "ov-bf16-mixed", "ov-int8-dynamic")
FILES = {
    "fp32-fused": "model.fused.onnx",
    "int8": "model.int8.onnx",
    "fp16": "model.fp16.onnx",
    "ov-fp32": "model.onnx",
    "ov-bf16": "model.onnx",
    "ov-bf16-split": "model.bf16-split.onnx",
    "ov-bf16-mixed": "model.bf16-mixed.onnx",
    "ov-int8-dynamic": "model.int8-weights.onnx",
    "ov-int8": "model.ov-int8.onnx",
}
SHAPES = {
    # name: (precision, device, runtime, fused)
    "fp32-fused": ("fp32", "any", ONNXRUNTIME, True),
    "int8": ("int8", "cpu", ONNXRUNTIME, True),
    "fp16": ("fp16", "cuda", ONNXRUNTIME, True),
    "ov-fp32": ("fp32", "cpu", OPENVINO, False),
    "ov-bf16": ("bf16", "cpu", OPENVINO, False),
    "ov-bf16-split": ("bf16-mixed", "cpu", OPENVINO, False),
    "ov-bf16-mixed": ("bf16-mixed", "cpu", OPENVINO, False),
    "ov-int8-dynamic": ("int8", "cpu", OPENVINO, False),
    "ov-int8": ("int8", "cpu", OPENVINO, False),
}


def candidate(name: str, gate: dict[str, Any] | None = None) -> Variant:
    """The model-folder entry of variant ``name``."""
    precision, device, runtime, fused = SHAPES[name]
    return Variant(file=FILES[name], precision=precision, device=device, fused=fused, gate=gate or {}, runtime=runtime)


def gate_figures(reference: np.ndarray, scores: np.ndarray, groups: list[str]) -> dict[str, Any]:
    """The gate's report as stored in ``rerank.json``: the worst-case figures, the verdict, and
    per query the figures the rules read (rounded: they are read by people)."""
    report = gate_probes.gate_report(reference, scores, groups)
    per_query = {
        name: {
            "spearman": round(q["spearman"], 6),
            "top3_kept": q["top3_kept"],
            "top10_agreement": q["top10_agreement"],
            "max_abs_diff": float(f"{q['max_abs_diff']:.4g}"),
            "max_rel_diff": float(f"{q['max_rel_diff']:.4g}"),
        }
        for name, q in report["per_query"].items()
    }
    return {
        "version": GATE_VERSION,
        "passed": gate_probes.passes(report),
        **{k: v for k, v in report.items() if k != "per_query"},
        "min_spearman": round(report["min_spearman"], 6),
        "per_query": per_query,
    }


NO_FUSED_GRAPH = "this architecture has no fused graph (its attention is not the encoders' MultiHeadAttention)"


def _unfused(variant: Variant) -> Variant:
    """``variant`` as derived from ``model.onnx`` rather than the fused graph."""
    return dataclasses.replace(variant, fused=False)


def missing_runtime(name: str) -> str | None:
    """Why variant ``name`` cannot be built and gated here (a package or the CPU's bf16 / int8
    units are missing), or None."""
    from rerank.converters import quantize
    from rerank.service.scoring import runs_natively, runtime_available

    if SHAPES[name][2] == OPENVINO and not runtime_available(OPENVINO):
        return "OpenVINO is not installed (pip install 'rerank[openvino]')"
    if name == "ov-int8" and not quantize.available():
        return "NNCF is not installed (pip install 'rerank[quantize]')"
    if not runs_natively(candidate(name)):
        units = SHAPES[name][0].removesuffix("-mixed")
        return f"this CPU has no {units} units, so its gate cannot be measured here; convert on one that has"
    return None


def _fuse(model: onnx.ModelProto, model_type: str = "bert") -> onnx.ModelProto:
    """ONNX Runtime's transformer fusions for ``model_type`` (its optimizer's name for the kind of graph)."""
    from onnxruntime.transformers.optimizer import optimize_model

    # opt_level=0: only the Python-side pattern fusions; ONNX Runtime applies its own at load.
    # Quiet: it warns that our producer name is not "pytorch", which is what it checks for "bert".
    with quiet_onnxruntime_tools():
        optimized = optimize_model(model, model_type=model_type, num_heads=0, hidden_size=0, opt_level=0)
    return optimized.model


def _quantize_int8(fused_path: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Quiet: it advises shape-inference pre-processing, which only static quantisation needs.
    with quiet_onnxruntime_tools():
        quantize_dynamic(
            str(fused_path),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            # Only weight matrices: activations x activations stay float.
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
        )


def _to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers.onnx_model import OnnxModel

    half = OnnxModel(model)
    # keep_io_types: the service feeds int64 ids and reads float32 logits whatever the variant.
    with quiet_onnxruntime_tools():
        half.convert_float_to_float16(keep_io_types=True)
    return half.model


def build_fused(folder: Path, loaded: LoadedModel, progress: Callable[[str], None] = print) -> Path:
    """Writes the fused fp32 graph, the base of every variant. Needs the weights, so the
    converter calls it before it lets them go (a bge-m3 copy is 2.3 GB)."""
    progress("variants: building the fused graph (MultiHeadAttention, SkipLayerNorm, BiasGelu)")
    path = folder / FILES["fp32-fused"]
    family = families.of(loaded)
    graph = family.build_graph(loaded.spec, loaded.weights, fused_attention=True)
    onnx_graph.save(_fuse(graph, family.fusions), path)
    return path


MIXED = {"ov-bf16-split": mixed_precision.SPLIT_RECIPES, "ov-bf16-mixed": mixed_precision.RECIPES}
"""The variants written by :mod:`rerank.converters.mixed_precision`, each with its recipes."""


def _mixed_bf16(
    name: str,
    path: Path,
    score: Callable[[Variant], np.ndarray],
    reference: np.ndarray,
    groups: list[str],
    enforce_gate: bool,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Writes and gates variant ``name``'s recipes (:data:`MIXED`) fastest first, into ``path``
    (from ``model.onnx`` beside it); stops at the first that passes (gate off: the first). The
    figures are that recipe's, with its name and every tried recipe's outcome; a graph the
    recipes cannot rewrite (not our encoder builder's layers, or too few of them) gives
    ``skipped`` and why, and the ladder ends at a recipe that spares more layers than it has."""
    tried: dict[str, str] = {}
    figures: dict[str, Any] = {}
    for recipe in MIXED[name]:
        model = onnx.load(str(path.parent / "model.onnx"))
        try:
            products = mixed_precision.to_mixed_bf16(model, recipe)
        except mixed_precision.NotOurLayers as exc:
            if tried:  # a later recipe spares more layers than the model has: the ladder ends
                progress(f"variants: {name}, {recipe.name}: not tried, {exc}")
                break
            return {"passed": False, "skipped": f"its recipes do not apply to this graph: {exc}"}
        if products == 0:  # it spares every product: an fp32 graph, not a bf16 variant
            if tried:
                progress(f"variants: {name}, {recipe.name}: not tried, it leaves no weight product in bf16 here")
                break
            return {"passed": False, "skipped": "its recipes leave no weight product of this graph in bf16"}
        onnx_graph.save(model, path)
        del model
        release_memory()
        figures = gate_figures(reference, score(candidate(name)), groups)
        tried[recipe.name] = gate_probes.summary(figures)
        progress(f"variants: {name}, {recipe.name} ({products} weight products in bf16): {tried[recipe.name]}")
        figures.update(recipe=recipe.name, recipes_tried=dict(tried))
        if figures["passed"] or not enforce_gate:
            break
    return figures


def write_variants(
    folder: Path,
    config: ModelFolderConfig,
    names: tuple[str, ...],
    score: Callable[[Variant], np.ndarray],
    reference: np.ndarray,
    groups: list[str],
    *,
    enforce_gate: bool = True,
    progress: Callable[[str], None] = print,
) -> tuple[dict[str, Variant], dict[str, dict[str, Any]]]:
    """Derives ``names`` in ``folder`` (the ONNX Runtime ones from the fused graph,
    :func:`build_fused`; the OpenVINO ones from ``model.onnx``); returns the variants kept and
    every variant's gate figures.

    ``score(variant)`` scores the gate pairs with one variant; ``reference`` is the fp32 graph's
    scores for them and ``groups`` their queries. With ``enforce_gate=False`` (speed benchmarks
    on random weights, where accuracy means nothing) variants are kept whatever their figures.
    Each step reads its input from disk, so only one model copy is in memory at a time.
    """
    unknown = set(names) - set(KNOWN)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; known: {', '.join(KNOWN)}")
    kept: dict[str, Variant] = {}
    figures: dict[str, dict[str, Any]] = {}
    fused_path = folder / FILES["fp32-fused"]
    fused = fused_path.exists()
    base = fused_path if fused else folder / "model.onnx"  # what int8 and fp16 are derived from
    for name in KNOWN:
        if name not in names:
            continue
        why = missing_runtime(name) or (None if fused or name != "fp32-fused" else NO_FUSED_GRAPH)
        if why:
            progress(f"variants: {name}: skipped, {why}")
            figures[name] = {"passed": False, "skipped": why}
            continue
        path = folder / FILES[name]
        if name in MIXED and figures.get("ov-bf16", {}).get("passed"):
            why = "ov-bf16 passed its gate, and all of it in bf16 is faster"
            progress(f"variants: {name}: skipped, {why}")
            figures[name] = {"passed": False, "skipped": why}
            continue
        if name == "int8":
            progress("variants: int8 dynamic quantisation")
            _quantize_int8(base, path)
        elif name == "fp16":
            progress("variants: float16 conversion")
            onnx_graph.save(_to_fp16(onnx.load(str(base))), path)
        elif name == "ov-int8-dynamic":
            progress("variants: ov-int8-dynamic, weights to int8")
            model = onnx.load(str(folder / "model.onnx"))
            if not mixed_precision.weight_products(model):  # a token table alone is not worth a variant
                why = "the graph has no layer weight products (l<i>_... MatMuls) to store in int8"
                progress(f"variants: {name}: skipped, {why}")
                figures[name] = {"passed": False, "skipped": why}
                continue
            int8_weights.compress(model)
            onnx_graph.save(model, path)
            del model
        elif name == "ov-int8":
            from rerank.converters.quantize import quantize_int8

            progress("variants: ov-int8 static quantisation (NNCF, SmoothQuant), calibrating")
            quantize_int8(folder, config, path.name)
        release_memory()
        if name in MIXED:
            figures[name] = _mixed_bf16(name, path, score, reference, groups, enforce_gate, progress)
            if "skipped" in figures[name]:
                progress(f"variants: {name}: skipped, {figures[name]['skipped']}")
                continue
        else:
            figures[name] = gate_figures(reference, score(candidate(name)), groups)
        passed = figures[name]["passed"]
        verdict = "passed" if passed else ("FAILED (kept: gate off)" if not enforce_gate else "FAILED, not written")
        f = figures[name]
        progress(
            f"variants: {name}: min Spearman {f['min_spearman']:.4f}, top-3 "
            f"{'kept' if f['all_top3_kept'] else 'changed'}, max |Δ| {f['max_abs_diff']:.2e} -> {verdict}"
        )
        if passed or not enforce_gate:
            kept[name] = candidate(name, figures[name]) if fused else _unfused(candidate(name, figures[name]))
        elif path.name != "model.onnx":  # the OpenVINO fp32/bf16 variants read the reference graph
            onnx_graph.remove(path)
    if "fp32-fused" not in kept:
        # The fused graph was only a stepping stone (or failed its gate): don't ship it.
        onnx_graph.remove(fused_path)
    return kept, figures
