"""The CUDA path, checked end to end on a GPU machine (driven by bench/gpu_check.sh)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from converters import onnx_graph
from converters.spec import EncoderSpec
from service.backends.onnx import CUDA, Batch, OnnxBackend
from service.core.batching import pad
from service.core.model_folder import find_model_folders, read_model_folder
from service.core.tokenization import PairEncoder

ROOT = Path(__file__).resolve().parent.parent
FAILURES: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {name}  {detail}", flush=True)
    if not ok:
        FAILURES.append(name)


def bge_shape_weights(rng: np.random.Generator, spec: EncoderSpec, vocab: int) -> dict[str, np.ndarray]:
    H, I = spec.hidden, spec.intermediate
    def m(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)
    w = {"emb.word": m(vocab, H), "emb.pos": m(spec.max_length + 2, H), "emb.type": m(1, H),
         "emb.ln.w": np.ones(H, np.float32), "emb.ln.b": np.zeros(H, np.float32),
         "head.dense.w": m(H, H), "head.dense.b": m(H), "head.out.w": m(1, H), "head.out.b": m(1)}
    for i in range(spec.num_layers):
        p = f"L{i}."
        w.update({p + "qkv.w": m(3 * H, H), p + "qkv.b": m(3 * H), p + "o.w": m(H, H), p + "o.b": m(H),
                  p + "attn_ln.w": np.ones(H, np.float32), p + "attn_ln.b": np.zeros(H, np.float32),
                  p + "up.w": m(I, H), p + "up.b": m(I), p + "down.w": m(H, I), p + "down.b": m(H),
                  p + "ffn_ln.w": np.ones(H, np.float32), p + "ffn_ln.b": np.zeros(H, np.float32)})
    return w


def main() -> int:
    providers = ort.get_available_providers()
    check("CUDAExecutionProvider available", CUDA in providers, str(providers))
    if CUDA not in providers:
        return 1

    # 2-3. A converted fixture: fp16 on CUDA vs fp32 on the CPU.
    folders = find_model_folders(ROOT / "models-gpu")
    check("converted fixture present in models-gpu/", bool(folders), "run `make gpu-prep` on the CPU machine")
    for folder in folders:
        config = read_model_folder(folder)
        gpu = OnnxBackend(folder, config, device="cuda")
        cpu = OnnxBackend(folder, config, variant="fp32", device="cpu")
        check(f"{config.name}: CUDA picks the fp16 variant", gpu.variant_key == "fp16" and gpu.provider == CUDA,
              f"{gpu.variant_key} on {gpu.provider}")
        encoder = PairEncoder(folder / "tokenizer.json", config.template, config.max_length)
        from converters.probes import probe_pairs
        from converters.variants import gate

        pairs = [encoder.encode(q, [d]).pairs[0] for q, d in probe_pairs(config.max_length)]
        batch = pad(pairs, config.template.pad_id, config.type_ids_input)
        result = gate(gpu.run(batch), cpu.run(batch))
        check(f"{config.name}: fp16/CUDA agrees with fp32/CPU", result.passed, str(result.to_json()))

    # 4. Throughput on a bge-reranker-v2-m3-shaped graph.
    spec = EncoderSpec(family="xlm-roberta", num_layers=24, hidden=1024, heads=16, intermediate=4096,
                       layer_norm_eps=1e-5, max_length=8192, positions="learned", feed_forward="gelu",
                       head="roberta", pad_id=1, position_offset=2, positions_from_pad=True, type_vocab=1)
    rng = np.random.default_rng(0)
    weights = bge_shape_weights(rng, spec, vocab=250002)
    from converters.variants import _fuse, _to_fp16

    work = Path(tempfile.mkdtemp())
    fused = _fuse(onnx_graph.build_graph(spec, weights, fused_attention=True))
    onnx_graph.save(fused, work / "fp32.onnx")
    onnx_graph.save(_to_fp16(fused), work / "fp16.onnx")
    ids = rng.integers(5, 250000, (64, 200), dtype=np.int64)
    ids[:, 0] = 0
    batch = Batch(ids, np.ones_like(ids), None)
    options = ort.SessionOptions()
    rates = {}
    for name in ("fp32", "fp16"):
        session = ort.InferenceSession(str(work / f"{name}.onnx"), options, providers=[CUDA])
        feed = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        session.run(None, feed)
        start, reps = time.perf_counter(), 10
        for _ in range(reps):
            session.run(None, feed)
        seconds = (time.perf_counter() - start) / reps
        rates[name] = 64 / seconds
        flops = 2 * sum(v.size for k, v in weights.items() if k != "emb.word") * ids.size / seconds / 1e12
        print(f"      bge-shape {name} on CUDA: {rates[name]:.0f} pairs/s, {seconds * 1e3:.1f} ms per 64x200 batch, "
              f"{flops:.1f} TFLOP/s (weights only)")
    check("fp16 faster than fp32 on CUDA", rates["fp16"] > rates["fp32"], f"{rates['fp16'] / rates['fp32']:.2f}x")
    print(f"\n{'ALL PASS' if not FAILURES else 'FAILED: ' + ', '.join(FAILURES)}")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
