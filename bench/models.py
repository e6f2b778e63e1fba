"""The bench models and their converted forms.

* **minilm-ce**: all-MiniLM-L6-v2's real encoder with a seeded head
  (:mod:`rerank.converters.testing.minilm_ce`), converted with the default variants this machine
  serves (:func:`gated_variants`) and the accuracy gate on: the model quality claims are made on,
  and the one the server's own choice (``grpc-auto``) is measured on.
* **bert-small**, **bge-shape**: random weights (seeded) in published shapes with fixture
  tokenizers, converted with ``--no-gate`` (accuracy means nothing on random weights): speed only.
* **qwen3-0.6b-shape**: a Qwen3-Reranker with Qwen3-Reranker-0.6B's exact dimensions (28 layers,
  hidden 1024, 16 query / 8 KV heads of 128, FFN 3072), seeded weights and the fixture's
  byte-level BPE with Qwen3's special tokens (:mod:`rerank.converters.testing.qwen3`), converted
  like minilm-ce (the gate decides its precision, as for a real checkpoint; its figures are in
  ``rerank.json``). **qwen3-tiny** is the same at the fixture's tiny shape: a smoke model for the
  bench's own code, no figures.

Each model exists in up to three forms, all cached under ``.cache/bench/<model>/`` (git-ignored):

* ``checkpoint/``: a Hugging Face checkpoint folder;
* ``models/<model>/``: our model folder, written by ``rerank.converters.cli``;
* ``<model>-f16.gguf`` and ``<model>-q8_0.gguf``: llama.cpp's ``convert_hf_to_gguf.py`` output
  (only when a llama peer is measured).

A form is rebuilt only when it is missing (or lacks a variant its model asks for); delete the
folder to start over.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rerank.converters.variants import DEFAULT as DEFAULT_VARIANTS
from rerank.converters.variants import candidate

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "bench"
SEED = 0
GGUF_TYPES = ("f16", "q8_0")
REAL = "minilm-ce"
QWEN3 = {"qwen3-0.6b-shape": "0.6b", "qwen3-tiny": "tiny"}
"""The decoder rerankers (Qwen3-Reranker): bench name -> :data:`rerank.converters.testing.qwen3.SHAPES` key."""
ENCODER, DECODER = "encoder", "decoder"


@dataclass(frozen=True)
class Shape:
    """How one bench model is built: the fixture tokenizer it borrows and its transformer shape."""

    fixture: str
    """``rerank.converters.testing.checkpoints`` kind whose tokenizer files are copied."""
    layers: int
    hidden: int
    heads: int
    intermediate: int
    max_positions: int
    model_max_length: int
    vocab_size: int | None
    """Embedding rows; None: the tokenizer's own size."""
    variants: tuple[str, ...] = ("fp32-fused", "int8")
    """Our variants, converted with ``--no-gate``."""


SHAPES: dict[str, Shape] = {
    # BAAI/bge-reranker-v2-m3 (XLMRobertaForSequenceClassification, ~568M parameters).
    "bge-shape": Shape(
        "xlmr",
        layers=24,
        hidden=1024,
        heads=16,
        intermediate=4096,
        max_positions=8194,
        model_max_length=8192,
        vocab_size=250002,
        # No OpenVINO variants: gating them scores ~300 pairs each, tens of minutes at this size.
    ),
    # cross-encoder/ms-marco-MiniLM-L-6-v2's shape with a 384-wide intermediate x4 (MiniLM-L6 family).
    "bert-small": Shape(
        "bert",
        layers=6,
        hidden=384,
        heads=12,
        intermediate=1536,
        max_positions=512,
        model_max_length=512,
        vocab_size=None,
        variants=("fp32-fused", "int8", "ov-fp32", "ov-bf16"),
    ),
}
NAMES = (REAL, *SHAPES, *QWEN3)
GATED = (REAL, *QWEN3)
"""Converted with :func:`gated_variants` and the gate on: the gate decides which variants exist."""


def kind(name: str) -> str:
    """:data:`DECODER` for the Qwen3-Reranker models, else :data:`ENCODER` (which peers apply)."""
    return DECODER if name in QWEN3 else ENCODER


_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentencepiece.bpe.model",
    "vocab.txt",
)


@dataclass(frozen=True)
class BenchModel:
    """Every form of one bench model, built."""

    name: str
    checkpoint: Path
    models_dir: Path
    gguf: dict[str, Path]
    params: int
    """All parameters of the checkpoint."""
    matmul_params: int
    """Parameters outside the embedding tables: the ones each token multiplies (GFLOP/s counts these)."""

    @property
    def kind(self) -> str:
        """:data:`ENCODER` or :data:`DECODER`."""
        return kind(self.name)

    @property
    def folder(self) -> Path:
        """Our model folder (served by name ``self.name``)."""
        return self.models_dir / self.name

    @property
    def max_length(self) -> int:
        """The longest pair a peer is told to take (longer ones it truncates, as every peer does):
        a decoder's model-card length, an encoder's 512, or the checkpoint's positions if fewer."""
        from rerank.converters.qwen3.prompt import MODEL_CARD_MAX_LENGTH

        config = json.loads((self.checkpoint / "config.json").read_text())
        longest = MODEL_CARD_MAX_LENGTH if self.kind == DECODER else 512
        return min(longest, int(config.get("max_position_embeddings", longest)))


def _atomic_dir(final: Path, build: Callable[[Path], None]) -> Path:
    """Runs ``build(tmp)`` in a temporary sibling of ``final`` and renames it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build(tmp)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _write_checkpoint(name: str, shape: Shape, out: Path) -> None:
    """Random-weight *ForSequenceClassification checkpoint with ``shape`` and a fixture tokenizer."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
    )

    from rerank.converters.testing.checkpoints import make_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        fixture = make_checkpoint(shape.fixture, Path(tmp) / "fixture", seed=SEED)
        for file in _TOKENIZER_FILES:
            if (fixture / file).exists():
                shutil.copy(fixture / file, out / file)
        tokenizer_vocab = json.loads((fixture / "config.json").read_text())["vocab_size"]
    config_path = out / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    tokenizer_config["model_max_length"] = shape.model_max_length
    config_path.write_text(json.dumps(tokenizer_config, indent=2) + "\n")

    common = {
        "num_hidden_layers": shape.layers,
        "hidden_size": shape.hidden,
        "num_attention_heads": shape.heads,
        "intermediate_size": shape.intermediate,
        "max_position_embeddings": shape.max_positions,
        "vocab_size": shape.vocab_size or tokenizer_vocab,
        "num_labels": 1,
        "name_or_path": name,
    }
    if shape.fixture == "xlmr":
        config = XLMRobertaConfig(
            type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, **common
        )
        config.architectures = ["XLMRobertaForSequenceClassification"]
        model_class = XLMRobertaForSequenceClassification
    else:
        config = BertConfig(type_vocab_size=2, pad_token_id=0, layer_norm_eps=1e-12, **common)
        config.architectures = ["BertForSequenceClassification"]
        model_class = BertForSequenceClassification
    torch.manual_seed(SEED)
    model = model_class(config).eval()
    model.save_pretrained(out, safe_serialization=True)


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({result.returncode}): {' '.join(command)}\n{(result.stdout + result.stderr)[-3000:]}"
        )


def gated_variants() -> tuple[str, ...]:
    """The default variants less those this machine cannot serve (fp16 is CUDA's: without a CUDA
    provider its gate would score ~300 pairs at the CPU's fp16 speed for a variant the bench never
    runs here)."""
    import onnxruntime

    cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    return tuple(v for v in DEFAULT_VARIANTS if cuda or candidate(v).device != "cuda")


def _convert_ours(name: str, checkpoint: Path, models_dir: Path, variants: tuple[str, ...], gate: bool) -> None:
    """``rerank.converters.cli`` with ``variants``, the accuracy gate on or off."""
    command = [sys.executable, "-m", "rerank.converters.cli", str(checkpoint), "--name", name, "--out", str(models_dir)]
    command += ["--variants", ",".join(variants), *([] if gate else ["--no-gate"])]
    _run(command, f"converting {name}")


def _count_params(checkpoint: Path) -> tuple[int, int]:
    """(all parameters, parameters outside the embedding tables: ``*embeddings*``, a decoder's
    ``embed_tokens`` and an untied ``lm_head``, of which a reranker reads two rows) of a
    safetensors checkpoint."""
    from safetensors import safe_open

    total = matmul = 0
    with safe_open(str(checkpoint / "model.safetensors"), "np") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open is not iterable
            if key.endswith("position_ids"):
                continue
            count = 1
            for dim in f.get_slice(key).get_shape():
                count *= dim
            total += count
            matmul += 0 if "embed" in key or key.startswith("lm_head.") else count
    return total, matmul


def ensure(
    name: str,
    log: Callable[[str], None] = print,
    *,
    gguf: bool = True,
    fresh: bool = True,
    variants: tuple[str, ...] | None = None,
) -> BenchModel:
    """Builds whatever form of model ``name`` is missing from the cache and returns all of them
    (the GGUF files only with ``gguf``). ``fresh=False`` keeps a model folder an older converter
    wrote, whatever variants it has unless ``variants`` names some (for a tool that reads only its
    tokenizer and template, and builds graphs itself). ``variants`` narrows a gated model's
    conversion to those (the gate still judges each): a folder with at least them is kept."""
    root = CACHE / name
    checkpoint = root / "checkpoint"
    if not (checkpoint / "model.safetensors").exists():
        if name == REAL:
            from rerank.converters.testing.minilm_ce import write_checkpoint

            log(f"{name}: writing the checkpoint (all-MiniLM-L6-v2's encoder, seeded head)")
            _atomic_dir(checkpoint, write_checkpoint)
        elif name in QWEN3:
            from rerank.converters.testing.qwen3 import make_qwen3_checkpoint

            log(f"{name}: writing the Qwen3-Reranker checkpoint (shape {QWEN3[name]}, seeded weights)")
            _atomic_dir(checkpoint, lambda tmp: make_qwen3_checkpoint(tmp, QWEN3[name], seed=SEED))
        else:
            log(f"{name}: writing the random-weight checkpoint")
            _atomic_dir(checkpoint, lambda tmp: _write_checkpoint(name, SHAPES[name], tmp))
    models_dir = root / "models"
    rerank_json = models_dir / name / "rerank.json"
    gate = name not in SHAPES
    asked = bool(variants)
    variants = variants or (gated_variants() if gate else SHAPES[name].variants)
    present = json.loads(rerank_json.read_text()) if rerank_json.exists() else {}
    gated = present.get("verification", {}).get("variant_gates", {})
    # A decoder folder from before the shared-prefix graph would bench a graph the converter no
    # longer writes.
    stale = fresh and name in QWEN3 and present and not present.get("graph", {}).get("shared_prefix")
    missing = not set(variants) <= set(gated) | set(present.get("variants", {}))
    if not present or stale or (missing and (fresh or asked)):
        log(f"{name}: converting to our model folder ({', '.join(variants)}, gate {'on' if gate else 'off'})")
        shutil.rmtree(models_dir, ignore_errors=True)
        _atomic_dir(models_dir, lambda tmp: _convert_ours(name, checkpoint, tmp, variants, gate))
    paths: dict[str, Path] = {}
    for outtype in GGUF_TYPES if gguf else ():
        from rerank.converters.testing.llama_cpp import convert_to_gguf

        path = root / f"{name}-{outtype}.gguf"
        if not path.exists():
            log(f"{name}: converting to GGUF {outtype}")
            partial = path.with_suffix(".gguf.part")
            try:
                convert_to_gguf(checkpoint, partial, outtype)
            except Exception as exc:  # noqa: BLE001 - the llama peers then say so; the others run
                log(f"{name}: GGUF {outtype} conversion failed: {str(exc).splitlines()[0] if str(exc) else exc!r}")
                continue
            partial.rename(path)
        paths[outtype] = path
    params, matmul_params = _count_params(checkpoint)
    return BenchModel(name, checkpoint, models_dir, paths, params, matmul_params)


def gate_figures(model: BenchModel) -> dict[str, dict[str, object]]:
    """Per variant the converter gated, what its gate decided on (``rerank.json``,
    ``verification.variant_gates``): passed, the worst query's Spearman, the queries that kept
    their top 3, the largest |Δ logit| against the fp32 graph; or why it was skipped."""
    config = json.loads((model.folder / "rerank.json").read_text())
    out: dict[str, dict[str, object]] = {}
    for variant, gate in config.get("verification", {}).get("variant_gates", {}).items():
        if "skipped" in gate:
            out[variant] = {"passed": False, "skipped": gate["skipped"]}
            continue
        queries = int(gate["queries"])
        out[variant] = {
            "passed": bool(gate["passed"]),
            "min_spearman": gate["min_spearman"],
            "top3_kept": f"{queries - len(gate.get('queries_top3_changed', []))}/{queries}",
            "max_abs_diff": gate["max_abs_diff"],
            **({"recipe": gate["recipe"]} if "recipe" in gate else {}),
        }
    return out


def gate_lines(model: BenchModel) -> list[str]:
    """:func:`gate_figures` as one line per variant, for the report's notes."""
    lines = []
    for variant, g in gate_figures(model).items():
        if "skipped" in g:
            lines.append(f"{model.name} gate: {variant} skipped ({g['skipped']})")
            continue
        recipe = f", recipe {g['recipe']}" if "recipe" in g else ""
        lines.append(
            f"{model.name} gate: {variant} {'passed' if g['passed'] else 'FAILED'}: min Spearman "
            f"{float(g['min_spearman']):.4f}, top 3 kept {g['top3_kept']}, max |Δ logit| {float(g['max_abs_diff']):.3g}"
            f"{recipe}"
        )
    return lines
