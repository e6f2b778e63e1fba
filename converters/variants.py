"""Optimised graph variants, each written only if it passes an accuracy gate against fp32.

* ``fp32-fused``: attention as ONNX Runtime's MultiHeadAttention kernel (built in by
  :func:`converters.onnx_graph.build_graph`), then ONNX Runtime's transformer fusions
  (SkipLayerNormalization, BiasGelu). Same math as fp32.
* ``int8``: dynamic int8 quantisation of the fused graph's weight matrices, for the CPU.
* ``fp16``: the fused graph in float16 (inputs and outputs stay as they are), for CUDA.

The gate scores the probe pairs with the variant and with the fp32 graph: Spearman rank
correlation ≥ 0.99 and the same top 3. The figures go into ``rerank.json`` either way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from converters import onnx_graph
from converters.memory import release_memory
from converters.quiet import quiet_onnxruntime_tools
from converters.spec import LoadedModel
from service.model_folder import Variant

KNOWN = ("fp32-fused", "int8", "fp16")
DEFAULT = ("fp32-fused", "int8", "fp16")
MIN_SPEARMAN = 0.99
TOP_K = 3


@dataclass(frozen=True)
class GateResult:
    spearman: float
    same_top: bool
    max_abs_diff: float

    @property
    def passed(self) -> bool:
        return self.spearman >= MIN_SPEARMAN and self.same_top

    def to_json(self) -> dict:
        return {
            "spearman": round(self.spearman, 6),
            f"same_top{TOP_K}": self.same_top,
            "max_abs_diff": float(self.max_abs_diff),
            "min_spearman": MIN_SPEARMAN,
            "passed": self.passed,
        }


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties)."""

    def ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=float)
        for value in np.unique(x):  # average tied ranks
            tied = x == value
            r[tied] = r[tied].mean()
        return r

    ra, rb = ranks(np.asarray(a, float)), ranks(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return 1.0 if np.array_equal(ra, rb) else 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def gate(candidate: np.ndarray, reference: np.ndarray) -> GateResult:
    top = lambda x: list(np.argsort(-x, kind="stable")[:TOP_K])  # noqa: E731
    return GateResult(
        spearman(candidate, reference), top(candidate) == top(reference), float(np.max(np.abs(candidate - reference)))
    )


def _fuse(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers.optimizer import optimize_model

    # opt_level=0: only the Python-side pattern fusions; ONNX Runtime applies its own at load.
    # Quiet: it warns that our producer name is not "pytorch", which is what it checks for "bert".
    with quiet_onnxruntime_tools():
        optimized = optimize_model(model, model_type="bert", num_heads=0, hidden_size=0, opt_level=0)
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


FILES = {"fp32-fused": "model.fused.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}


def build_fused(folder: Path, loaded: LoadedModel, progress: Callable[[str], None] = print) -> Path:
    """Writes the fused fp32 graph, the base of every variant. Needs the weights, so the
    converter calls it before it lets them go (a bge-m3 copy is 2.3 GB)."""
    progress("variants: building the fused graph (MultiHeadAttention, SkipLayerNorm, BiasGelu)")
    path = folder / FILES["fp32-fused"]
    onnx_graph.save(_fuse(onnx_graph.build_graph(loaded.spec, loaded.weights, fused_attention=True)), path)
    return path


def write_variants(
    folder: Path,
    names: tuple[str, ...],
    score: Callable[[str], np.ndarray],
    reference: np.ndarray,
    *,
    enforce_gate: bool = True,
    progress: Callable[[str], None] = print,
) -> tuple[dict[str, Variant], dict[str, dict]]:
    """Derives ``names`` from the fused graph (:func:`build_fused`) in ``folder``; returns the
    variants kept and every variant's gate figures.

    ``score(file)`` scores the probe pairs with one graph file; ``reference`` is the fp32
    graph's scores for them. With ``enforce_gate=False`` (speed benchmarks on random weights,
    where accuracy means nothing) variants are kept whatever their figures. Each step reads
    its input from disk, so only one model copy is in memory at a time.
    """
    unknown = set(names) - set(KNOWN)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; known: {', '.join(KNOWN)}")
    kept: dict[str, Variant] = {}
    figures: dict[str, dict] = {}
    fused_path = folder / FILES["fp32-fused"]
    for name in ("fp32-fused", "int8", "fp16"):
        if name not in names:
            continue
        path = folder / FILES[name]
        if name == "int8":
            progress("variants: int8 dynamic quantisation")
            _quantize_int8(fused_path, path)
        elif name == "fp16":
            progress("variants: float16 conversion")
            onnx_graph.save(_to_fp16(onnx.load(str(fused_path))), path)
        release_memory()
        result = gate(score(path.name), reference)
        figures[name] = result.to_json()
        verdict = (
            "passed" if result.passed else ("FAILED (kept: gate off)" if not enforce_gate else "FAILED, not written")
        )
        progress(
            f"variants: {name}: Spearman {result.spearman:.4f}, top-{TOP_K} "
            f"{'same' if result.same_top else 'differs'}, max |Δ| {result.max_abs_diff:.2e} -> {verdict}"
        )
        if result.passed or not enforce_gate:
            kept[name] = Variant(
                file=path.name,
                precision="fp16" if name == "fp16" else ("int8" if name == "int8" else "fp32"),
                device={"int8": "cpu", "fp16": "cuda"}.get(name, "any"),
                fused=True,
                gate=result.to_json(),
            )
        elif name != "fp32-fused":
            path.unlink(missing_ok=True)
    if "fp32-fused" not in kept:
        # The fused graph was only a stepping stone (or failed its gate): don't ship it.
        fused_path.unlink(missing_ok=True)
        for data in folder.glob(f"{FILES['fp32-fused']}.data"):
            data.unlink()
    return kept, figures
