"""An in-process library peer, run by its own environment's Python (``bench/venvs.py``).

    <venv>/bin/python -P bench/peer_worker.py st --checkpoint DIR --backend openvino [--precision f32]
    <venv>/bin/python -P bench/peer_worker.py fastembed --model-dir DIR
    <venv>/bin/python -P bench/peer_worker.py export-onnx --checkpoint DIR --out DIR
    <venv>/bin/python -P bench/peer_worker.py ov-genai --model-dir DIR [--precision f32] --max-length N
    <venv>/bin/python -P bench/peer_worker.py qwen3-seq-cls --checkpoint DIR --out DIR

(``-P``: bench/ must not come first on the path, its ``profile.py`` would shadow the stdlib's.)
Stdlib and the peer's own library only: this file never imports the project. Requests and
replies are JSON lines on stdin and stdout (library output goes to stderr); the first line out
is ``{"ready": ..., "info": {...}}`` (versions, the precision the runtime really chose, export
time). A request ``{"pairs": [[query, document], ...], "batch_size": N, "raw": bool}`` is
answered ``{"scores": [...], "seconds": s}``: ``seconds`` is the library call alone (what an
application calling it in-process waits), so the pipe is not charged to the peer; ``raw``
asks for logits instead of the library's default output. An error is ``{"error": "..."}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

Scorer = Callable[[list[tuple[str, str]], int, bool], list[float]]


def _openvino_precision(model: Any) -> str:
    """The inference precision OpenVINO's CPU plugin compiled the model with (bf16 or f32)."""
    for holder in (model, getattr(model, "auto_model", None), *getattr(model, "_modules", {}).values()):
        for candidate in (holder, getattr(holder, "auto_model", None), getattr(holder, "model", None)):
            request = getattr(candidate, "request", None) or getattr(candidate, "compiled_model", None)
            compiled = getattr(request, "get_compiled_model", lambda request=request: request)()
            if compiled is not None and hasattr(compiled, "get_property"):
                hint = compiled.get_property("INFERENCE_PRECISION_HINT")
                return str(getattr(hint, "to_string", lambda hint=hint: hint)())
    return "unknown"


def sentence_transformers(args: argparse.Namespace) -> tuple[Scorer, dict[str, Any]]:
    """``CrossEncoder(checkpoint, backend=...)``: exported from the checkpoint by the library
    itself when the folder has no ONNX / OpenVINO file (it has none: a plain HF checkpoint)."""
    import torch
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(args.threads)
    # The bench's thread count, as every peer gets (the runtimes' defaults take every core).
    if args.backend == "openvino":
        ov_config = {"INFERENCE_NUM_THREADS": str(args.threads)}
        if args.precision == "f32":
            ov_config["INFERENCE_PRECISION_HINT"] = "f32"
        model_kwargs: dict[str, Any] = {"ov_config": ov_config}
    else:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        model_kwargs = {"session_options": options}
    start = time.perf_counter()
    encoder = CrossEncoder(
        args.checkpoint, num_labels=1, max_length=512, device="cpu", backend=args.backend, model_kwargs=model_kwargs
    )
    info: dict[str, Any] = {
        "load_seconds": round(time.perf_counter() - start, 2),
        "versions": {p: version(p) for p in ("sentence-transformers", "transformers", "torch")},
        "backend": args.backend,
    }
    if args.backend == "openvino":
        info["versions"].update({p: version(p) for p in ("openvino", "optimum-intel")})
        encoder.predict([("warm", "up")], show_progress_bar=False)  # OpenVINO compiles on first use
        info["precision"] = _openvino_precision(encoder)
    else:
        info["versions"].update({p: version(p) for p in ("onnxruntime", "optimum-onnx")})
        info["precision"] = "f32"
    identity = torch.nn.Identity()

    def score(pairs: list[tuple[str, str]], batch_size: int, raw: bool) -> list[float]:
        extra = {"activation_fn": identity} if raw else {}
        return [float(s) for s in encoder.predict(pairs, batch_size=batch_size, show_progress_bar=False, **extra)]

    return score, info


def fastembed(args: argparse.Namespace) -> tuple[Scorer, dict[str, Any]]:
    """``TextCrossEncoder`` on a local ONNX export: registered with ``add_custom_model`` (its
    sources name a Hub repository that is never contacted) and loaded from
    ``specific_model_path``, so nothing is downloaded."""
    from fastembed.common.model_description import ModelSource
    from fastembed.rerank.cross_encoder import TextCrossEncoder

    name = "bench/minilm-ce"
    if name not in {m["model"] for m in TextCrossEncoder.list_supported_models()}:
        TextCrossEncoder.add_custom_model(
            model=name, model_file="onnx/model.onnx", sources=ModelSource(hf=name), size_in_gb=0.1
        )
    start = time.perf_counter()
    encoder = TextCrossEncoder(name, specific_model_path=args.model_dir, threads=args.threads, lazy_load=False)
    info = {
        "load_seconds": round(time.perf_counter() - start, 2),
        "versions": {p: version(p) for p in ("fastembed", "onnxruntime")},
        "precision": "f32",
    }

    def score(pairs: list[tuple[str, str]], batch_size: int, raw: bool) -> list[float]:
        # rerank_pairs returns the model's logits; raw or not is the same for fastembed.
        return [float(s) for s in encoder.rerank_pairs(pairs, batch_size=batch_size)]

    return score, info


def ov_genai(args: argparse.Namespace) -> tuple[Scorer, dict[str, Any]]:
    """OpenVINO GenAI's ``TextRerankPipeline`` on an ``optimum-cli export openvino --task
    text-classification`` folder. ``rerank(query, documents)`` scores a request's documents as
    one batch (its API has no batch size) and returns ``(index, score)`` best first, the score
    being the sigmoid of the model's logit (for a Qwen3-Reranker sequence-classification export
    ``sigmoid(logit(yes) - logit(no))``): ``raw`` inverts the sigmoid, so a raw logit carries
    the float32 score's rounding (scores near 1 lie 6e-8 apart: ~1e-3 at a logit of 10)."""
    import math

    import openvino
    import openvino_genai

    properties: dict[str, Any] = {"INFERENCE_NUM_THREADS": args.threads}
    if args.precision == "f32":
        properties["INFERENCE_PRECISION_HINT"] = "f32"
    config = openvino_genai.TextRerankPipeline.Config()
    config.top_n = 1 << 30  # every document back, not the default top 3
    config.max_length = args.max_length
    start = time.perf_counter()
    pipeline = openvino_genai.TextRerankPipeline(args.model_dir, "CPU", config, **properties)
    # The pipeline hides its compiled model: the precision it ran at is the hint it was given or
    # else the CPU plugin's default for this CPU (bf16 where the CPU has bf16 units).
    precision = "f32" if args.precision == "f32" else openvino.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    info: dict[str, Any] = {
        "load_seconds": round(time.perf_counter() - start, 2),
        "versions": {p: version(p) for p in ("openvino-genai", "openvino", "openvino-tokenizers", "optimum-intel")},
        "precision": str(getattr(precision, "to_string", lambda: precision)()),
        "max_length": args.max_length,
    }

    def score(pairs: list[tuple[str, str]], batch_size: int, raw: bool) -> list[float]:
        queries = {q for q, _ in pairs}
        if len(queries) != 1:
            raise ValueError(f"one query per request, got {len(queries)}")
        ranked = pipeline.rerank(pairs[0][0], [d for _, d in pairs])
        scores = [math.nan] * len(pairs)
        for index, value in ranked:
            scores[index] = float(value)
        if any(math.isnan(s) for s in scores):
            raise RuntimeError(f"{len(ranked)} results for {len(pairs)} documents")
        if raw:
            scores = [math.log(s) - math.log1p(-s) for s in scores]
        return scores

    return score, info


def qwen3_seq_cls(args: argparse.Namespace) -> None:
    """A Qwen3-Reranker checkpoint (``Qwen3ForCausalLM``) as the ``Qwen3ForSequenceClassification``
    with one label that OpenVINO's own Qwen3-Reranker exports are made from: the score row is
    ``lm_head[yes] - lm_head[no]``, so its logit is ``logit(yes) - logit(no)`` at the last
    token (the model card's score, as vLLM's ``is_original_qwen3_reranker`` builds it too)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, Qwen3ForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
    causal = AutoModelForCausalLM.from_pretrained(args.checkpoint, dtype=torch.float32)
    config = AutoConfig.from_pretrained(args.checkpoint)
    config.architectures = ["Qwen3ForSequenceClassification"]
    config.num_labels = 1
    config.pad_token_id = tokenizer.pad_token_id
    # The pooled token is the last one that is not padding: the pad token must be set.
    if config.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token")
    model = Qwen3ForSequenceClassification(config).to(torch.float32)
    model.model.load_state_dict(causal.model.state_dict())
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    head = causal.get_output_embeddings().weight
    with torch.no_grad():
        model.score.weight.copy_((head[yes] - head[no]).unsqueeze(0))
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)


def export_onnx(args: argparse.Namespace) -> None:
    """sentence-transformers' own ONNX export (optimum) of the checkpoint, saved to ``--out``
    with its tokenizer files: what fastembed loads."""
    from sentence_transformers import CrossEncoder

    encoder = CrossEncoder(args.checkpoint, num_labels=1, max_length=512, device="cpu", backend="onnx")
    encoder.save_pretrained(args.out)


def serve(score: Scorer, info: dict[str, Any], out: Any) -> None:
    """Answers JSON-line requests from stdin on ``out`` until stdin closes."""
    out.write(json.dumps({"ready": True, "info": info}) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            pairs = [(q, d) for q, d in request["pairs"]]
            start = time.perf_counter()
            scores = score(pairs, int(request.get("batch_size", 32)), bool(request.get("raw", False)))
            reply: dict[str, Any] = {"scores": scores, "seconds": time.perf_counter() - start}
        except Exception as exc:  # noqa: BLE001 - the bench gets the error and decides
            traceback.print_exc()
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="kind", required=True)
    st = sub.add_parser("st")
    st.add_argument("--checkpoint", required=True)
    st.add_argument("--backend", choices=("onnx", "openvino"), required=True)
    st.add_argument("--precision", choices=("default", "f32"), default="default")
    fe = sub.add_parser("fastembed")
    fe.add_argument("--model-dir", required=True)
    ex = sub.add_parser("export-onnx")
    ex.add_argument("--checkpoint", required=True)
    ex.add_argument("--out", required=True)
    og = sub.add_parser("ov-genai")
    og.add_argument("--model-dir", required=True)
    og.add_argument("--precision", choices=("default", "f32"), default="default")
    og.add_argument("--max-length", type=int, required=True)
    sc = sub.add_parser("qwen3-seq-cls")
    sc.add_argument("--checkpoint", required=True)
    sc.add_argument("--out", required=True)
    for parser in (st, fe, og):
        parser.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    # Replies go to the real stdout; anything a library prints goes to stderr (the log).
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if args.kind in ("export-onnx", "qwen3-seq-cls"):
        (export_onnx if args.kind == "export-onnx" else qwen3_seq_cls)(args)
        return 0
    try:
        score, info = {"st": sentence_transformers, "fastembed": fastembed, "ov-genai": ov_genai}[args.kind](args)
    except Exception as exc:  # noqa: BLE001 - said on the protocol, so the bench can report it
        traceback.print_exc()
        out.write(json.dumps({"ready": False, "error": f"{type(exc).__name__}: {exc}"}) + "\n")
        out.flush()
        return 1
    serve(score, info, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
