"""An in-process library peer, run by its own environment's Python (``bench/venvs.py``).

    <venv>/bin/python -P bench/peer_worker.py st --checkpoint DIR --backend openvino [--precision f32]
    <venv>/bin/python -P bench/peer_worker.py fastembed --model-dir DIR
    <venv>/bin/python -P bench/peer_worker.py export-onnx --checkpoint DIR --out DIR

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
    for parser in (st, fe):
        parser.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    # Replies go to the real stdout; anything a library prints goes to stderr (the log).
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if args.kind == "export-onnx":
        export_onnx(args)
        return 0
    try:
        score, info = (sentence_transformers if args.kind == "st" else fastembed)(args)
    except Exception as exc:  # noqa: BLE001 - said on the protocol, so the bench can report it
        traceback.print_exc()
        out.write(json.dumps({"ready": False, "error": f"{type(exc).__name__}: {exc}"}) + "\n")
        out.flush()
        return 1
    serve(score, info, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
