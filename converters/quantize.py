"""Static int8 for OpenVINO (variant ``ov-int8``): post-training quantisation aimed at rankings.

ONNX Runtime's dynamic ``int8`` variant quantises activations per tensor from each batch's own
min/max; on a trained encoder a few outlier channels set that one scale, and the rankings move
far past the gate.
:func:`quantize_int8` writes a static int8 graph (QuantizeLinear/DequantizeLinear around each
weight MatMul, ranges fixed from calibration data) with NNCF's post-training quantisation:

* ``model_type=TRANSFORMER`` (attention's activation x activation MatMuls stay float) and
  **SmoothQuant** (alpha 0.95), which moves the activations' outlier channels into the weights
  before ranges are taken;
* per-channel symmetric weights, per-tensor activations, fast bias correction;
* :data:`KEEP_FP32`: the most sensitive layers (FFN down projections, the classification head)
  stay in fp32.

Some models fail the gate with any int8 recipe (their weights alone lose too much when rounded;
figures in docs/parity.md), so ``ov-int8`` is built and gated per model, and written only where
it passes.

Calibration text is generic (:func:`calibration_pairs`), never the gate's probes. NNCF is build
time only (extra ``quantize``): OpenVINO runs the QDQ graph's MatMuls on VNNI / AMX-INT8.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import io
import random
import re
from collections.abc import Sequence
from pathlib import Path

from rerank.converters.probes import MULTILINGUAL
from rerank.converters.quiet import quiet_loggers
from rerank.service.model_folder import ModelFolderConfig
from rerank.service.scoring import padded_batches

SMOOTH_QUANT_ALPHA = 0.95
KEEP_FP32 = (r".*_down_.*", r"head_.*", r".*_scores_.*")
"""Node-name patterns (``rerank.converters.onnx_graph``'s names) left in fp32: FFN down projections
and the head are the kinds of MatMul whose int8 error moves a trained encoder's logits most, and
attention scores (activation x activation) stay float in any case."""
CALIBRATION_PAIRS = 320
SEED = 7

# Standard-library modules whose docstrings give generic English prose offline.
_DOC_MODULES = (
    "json", "csv", "argparse", "logging", "collections", "itertools", "functools", "pathlib", "datetime",
    "random", "statistics", "string", "textwrap", "shutil", "subprocess", "threading", "queue", "socket",
    "email.message", "http.client", "urllib.parse", "zipfile", "tarfile", "sqlite3", "decimal", "fractions",
    "heapq", "bisect", "calendar", "difflib", "unittest", "pickle", "copy", "enum", "dataclasses", "contextlib",
    "io", "os", "time", "hashlib", "secrets", "gzip", "tempfile",
)  # fmt: skip


def available() -> bool:
    """Whether NNCF (extra ``quantize``) is installed."""
    return importlib.util.find_spec("nncf") is not None


def _paragraphs() -> dict[str, list[str]]:
    """Docstring paragraphs of at least 12 words, per module."""
    out: dict[str, list[str]] = {}
    for name in _DOC_MODULES:
        module = importlib.import_module(name)
        docs = [inspect.getdoc(module) or ""]
        for attr, obj in sorted(vars(module).items()):
            if not attr.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj)):
                docs.append(inspect.getdoc(obj) or "")
        paragraphs = []
        for doc in docs:
            for block in re.split(r"\n\s*\n", doc):
                text = " ".join(block.split())
                if len(text.split()) >= 12 and not text.startswith((">>>", "..", "$")):
                    paragraphs.append(text)
        if paragraphs:
            out[name] = paragraphs
    return out


def calibration_pairs(count: int = CALIBRATION_PAIRS, seed: int = SEED) -> list[tuple[str, str]]:
    """``count`` generic (query, document) pairs: English prose from the standard library's
    docstrings (a paragraph's first sentence as the query; documents from the same module, other
    modules, and long ones of several paragraphs), plus the converter's multilingual probe pairs
    so that the ranges see other scripts. Deterministic for a given Python version."""
    rng = random.Random(seed)
    by_module = _paragraphs()
    modules = sorted(by_module)
    pairs: list[tuple[str, str]] = []
    for query, document in MULTILINGUAL:
        pairs += [(query, document), (query, " ".join([document] * 8))]
    while len(pairs) < count:
        module = rng.choice(modules)
        query = re.split(r"(?<=[.!?:])\s", rng.choice(by_module[module]))[0][:160]
        kind = rng.random()
        if kind < 0.4:
            document = rng.choice(by_module[module])
        elif kind < 0.75:
            document = rng.choice(by_module[rng.choice(modules)])
        else:
            document = " ".join(rng.choice(by_module[rng.choice(modules)]) for _ in range(rng.randint(6, 20)))
        pairs.append((query, document))
    return pairs[:count]


def quantize_int8(
    folder: Path,
    config: ModelFolderConfig,
    out_name: str,
    *,
    source: str = "model.onnx",
    pairs: Sequence[tuple[str, str]] | None = None,
    keep_fp32: Sequence[str] = KEEP_FP32,
) -> Path:
    """NNCF static int8 of ``folder/source`` (the plain fp32 graph) into ``folder/out_name``.

    Returns the path; the caller gates it and keeps it only if it passes."""
    import nncf
    import onnx
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    model = onnx.load(str(folder / source))
    inputs = [i.name for i in model.graph.input]
    feeds = padded_batches(folder, config, list(pairs or calibration_pairs()), inputs=inputs)
    advanced = AdvancedQuantizationParameters(
        smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=SMOOTH_QUANT_ALPHA)
    )
    # NNCF draws rich progress bars on sys.stdout (no switch turns them off) and logs notices:
    # not our user's business; the converter reports its own progress.
    with quiet_loggers("nncf"), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        quantized = nncf.quantize(
            model,
            nncf.Dataset(feeds),
            model_type=nncf.ModelType.TRANSFORMER,
            preset=nncf.QuantizationPreset.PERFORMANCE,
            subset_size=len(feeds),
            fast_bias_correction=True,
            advanced_parameters=advanced,
            ignored_scope=nncf.IgnoredScope(patterns=list(keep_fp32), validate=False) if keep_fp32 else None,
        )
    from rerank.converters import onnx_graph  # onnx, like the rest of this function

    out = folder / out_name
    onnx_graph.save(quantized, out)
    return out
