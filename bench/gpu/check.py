"""The CUDA path, checked end to end on a GPU machine (driven by bench/gpu/check.sh).

Prints PASS/FAIL lines, a throughput table, and writes the figures as JSON (to ``$OUT`` when
set, else ``bench/results/``; a dry run's to the temporary folder). ``--dry-run`` runs every
step on the CPU with tiny timings, to prove the script itself before a GPU machine is spent on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from bench import results
from bench.measure import cpu_summary
from bench.peers import OurServer, OursGrpc
from rerank.converters import onnx_graph
from rerank.converters.gate_probes import spearman
from rerank.converters.probes import probe_pairs
from rerank.converters.spec import EncoderSpec
from rerank.converters.variants import FILES, _fuse, _to_fp16
from rerank.service.backends.base import pad
from rerank.service.backends.onnx import CUDA, Batch, OnnxBackend
from rerank.service.core.tokenization import PairEncoder
from rerank.service.model_folder import Variant, find_model_folders, read_model_folder

ROOT = Path(__file__).resolve().parents[2]
FAILURES: list[str] = []
REPORT: dict = {"checks": [], "throughput": []}


def check(name: str, ok: bool, detail: str = "") -> bool:
    print(f"{'PASS' if ok else 'FAIL'}  {name}  {detail}", flush=True)
    REPORT["checks"].append({"name": name, "passed": bool(ok), "detail": detail})
    if not ok:
        FAILURES.append(name)
    return ok


def bge_shape_weights(rng: np.random.Generator, spec: EncoderSpec, vocab: int) -> dict[str, np.ndarray]:
    """Random weights in the converter's canonical names, bge-reranker-v2-m3's shapes."""
    H, I = spec.hidden, spec.intermediate

    def m(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    w = {
        "emb.word": m(vocab, H),
        "emb.pos": m(spec.max_length + 2, H),
        "emb.type": m(1, H),
        "emb.ln.w": np.ones(H, np.float32),
        "emb.ln.b": np.zeros(H, np.float32),
        "head.dense.w": m(H, H),
        "head.dense.b": m(H),
        "head.out.w": m(1, H),
        "head.out.b": m(1),
    }
    for i in range(spec.num_layers):
        p = f"L{i}."
        w.update(
            {
                p + "qkv.w": m(3 * H, H),
                p + "qkv.b": m(3 * H),
                p + "o.w": m(H, H),
                p + "o.b": m(H),
                p + "attn_ln.w": np.ones(H, np.float32),
                p + "attn_ln.b": np.zeros(H, np.float32),
                p + "up.w": m(I, H),
                p + "up.b": m(I),
                p + "down.w": m(H, I),
                p + "down.b": m(H),
                p + "ffn_ln.w": np.ones(H, np.float32),
                p + "ffn_ln.b": np.zeros(H, np.float32),
            }
        )
    return w


@dataclasses.dataclass(frozen=True)
class RankAgreement:
    """One device's scores against another's on one probe set: Spearman >= 0.99 and the same
    top 3. (The converter's gate is per query on ~300 pairs, ``rerank.converters.gate_probes``; here
    the check is that CUDA ranks the converter's 13 probes as the CPU does.)"""

    spearman: float
    same_top3: bool
    max_abs_diff: float

    @property
    def passed(self) -> bool:
        return self.spearman >= 0.99 and self.same_top3

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "passed": self.passed}


def gate(candidate: np.ndarray, reference: np.ndarray) -> RankAgreement:
    top = lambda x: list(np.argsort(-x, kind="stable")[:3])  # noqa: E731
    diff = float(np.max(np.abs(candidate - reference)))
    return RankAgreement(spearman(candidate, reference), top(candidate) == top(reference), diff)


def fixture_checks(folder: Path, device: str) -> tuple[list[tuple[str, str]], np.ndarray]:
    """The converted fixture: the server's own variant choice on this device, and its scores
    against fp32 on the CPU (the converter's gate). Returns the probes that share the first
    probe's query, with their fp32-on-CPU scores, for :func:`service_check`."""
    config = read_model_folder(folder)
    chosen = OnnxBackend(folder, config)  # no device, no variant: what the server would pick
    cpu = OnnxBackend(folder, config, variant="fp32", device="cpu")
    want = ("fp16", CUDA) if device == "cuda" else ("fp32-fused", "CPUExecutionProvider")
    check(
        f"{config.name}: server's own choice is {want[0]} on {want[1]}",
        (chosen.variant_key, chosen.provider) == want,
        f"{chosen.variant_key} on {chosen.provider}",
    )
    encoder = PairEncoder(folder / "tokenizer.json", config.template, config.max_length)
    probes = probe_pairs(config.max_length)
    pairs = [encoder.encode(q, [d]).pairs[0] for q, d in probes]
    batch = pad(pairs, config.template.pad_id, config.type_ids_input)
    reference = cpu.run(batch)
    result = gate(chosen.run(batch), reference)
    check(
        f"{config.name}: {chosen.variant_key}/{chosen.provider} passes the gate against fp32/CPU",
        result.passed,
        json.dumps(result.to_json()),
    )
    REPORT["fixture_gate"] = result.to_json()
    fp32 = OnnxBackend(folder, config, variant="fp32", device=device)
    diff = float(np.max(np.abs(fp32.run(batch) - reference)))
    REPORT["fixture_fp32_device_vs_cpu_max_abs"] = diff
    check(f"{config.name}: fp32 on {fp32.provider} vs fp32 on the CPU", diff <= 1e-3, f"max |Δ| {diff:.2e}")
    same_query = [i for i, (q, _) in enumerate(probes) if q == probes[0][0]]
    return [probes[i] for i in same_query], reference[same_query]


def service_check(models: Path, pairs: list[tuple[str, str]], reference: np.ndarray) -> None:
    """The real server (``python -m rerank.service``, left to choose its variant) on this machine:
    ListModels reports the device's variant and provider, and a Rerank over gRPC ranks
    ``pairs`` (one query) like ``reference``, the fp32-on-CPU scores."""
    server = OurServer(models, read_model_folder(find_model_folders(models)[0]).name, None, Path(tempfile.mkdtemp()))
    client = OursGrpc(server, "grpc-auto")
    try:
        client.start()
        card = client.card()
        REPORT["service_model_card"] = {
            "id": card.id,
            "variant": card.variant,
            "provider": card.provider,
            "precision": card.precision,
        }
        print(f"      ListModels: {REPORT['service_model_card']}")
        response = client.rerank(pairs[0][0], [d for _, d in pairs])
        got = {r.index: r.score for r in response.results}
        result = gate(np.array([got.get(i, np.nan) for i in range(len(pairs))]), reference)
        check(
            "service over gRPC: ranks like fp32 on the CPU",
            result.passed and len(got) == len(pairs),
            f"{card.variant} on {card.provider}; {json.dumps(result.to_json())}",
        )
    except Exception as exc:  # noqa: BLE001 - report (the message carries the server's log tail)
        check("service over gRPC", False, f"{type(exc).__name__}: {exc}")
    finally:
        client.stop()


BGE_SHAPE = {
    "num_hidden_layers": 24,
    "hidden_size": 1024,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "max_position_embeddings": 8194,
}
"""bge-reranker-v2-m3's shape. Its vocabulary (250,002) is cut to 32k here: the embedding
lookup costs nothing next to the 24 layers, and the smaller table keeps the build short."""
DRY_SHAPE = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "max_position_embeddings": 514,
}


def hf_checkpoint(out: Path, dry_run: bool) -> Path | None:
    """A random-weight XLMRobertaForSequenceClassification of bge's shape, saved like a Hub
    checkpoint; None without torch + transformers (the numpy weights are used then)."""
    try:
        import torch
        from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification
    except ImportError:
        return None
    config = XLMRobertaConfig(
        vocab_size=1000 if dry_run else 32768,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        layer_norm_eps=1e-5,
        num_labels=1,
        **(DRY_SHAPE if dry_run else BGE_SHAPE),
    )
    config.architectures = ["XLMRobertaForSequenceClassification"]
    torch.manual_seed(0)
    XLMRobertaForSequenceClassification(config).eval().save_pretrained(out, safe_serialization=True)
    return out


def load_weights(work: Path, dry_run: bool) -> tuple[EncoderSpec, dict[str, np.ndarray], Path | None]:
    """bge-shaped weights: from an HF checkpoint through the converter's own reader when torch is
    here (so PyTorch can run the same model), else drawn with numpy."""
    checkpoint = hf_checkpoint(work / "checkpoint", dry_run)
    if checkpoint is not None:
        from rerank.converters.hf_checkpoint import load_checkpoint

        loaded = load_checkpoint(str(checkpoint))
        return loaded.spec, loaded.weights, checkpoint
    shape = DRY_SHAPE if dry_run else BGE_SHAPE
    spec = EncoderSpec(
        family="xlm-roberta",
        num_layers=shape["num_hidden_layers"],
        hidden=shape["hidden_size"],
        heads=shape["num_attention_heads"],
        intermediate=shape["intermediate_size"],
        layer_norm_eps=1e-5,
        max_length=shape["max_position_embeddings"] - 2,
        positions="learned",
        feed_forward="gelu",
        head="roberta",
        pad_id=1,
        position_offset=2,
        positions_from_pad=True,
        type_vocab=1,
    )
    return spec, bge_shape_weights(np.random.default_rng(0), spec, vocab=1000 if dry_run else 32768), None


def _median_ms(call, reps: int, sync=lambda: None) -> float:
    call()
    call()
    sync()
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1e3


def throughput(device: str, dry_run: bool) -> None:
    """bge-reranker-v2-m3's shape: fused fp32 and fp16 through the service's backend (I/O binding
    on CUDA) and through plain ``session.run``; and, when PyTorch is here, the same weights in
    transformers (fp32 for parity, fp16 for speed) on the same device."""
    work = Path(tempfile.mkdtemp())
    started = time.perf_counter()
    spec, weights, checkpoint = load_weights(work, dry_run)
    vocab = int(weights["emb.word"].shape[0])
    matmul_params = sum(v.size for k, v in weights.items() if v.ndim == 2 and not k.startswith("emb."))
    fused = _fuse(onnx_graph.build_graph(spec, weights, fused_attention=True))
    del weights
    onnx_graph.save(fused, work / FILES["fp32-fused"])
    del fused  # saving may have moved its weights to external data: convert the copy on disk
    onnx_graph.save(_to_fp16(onnx.load(str(work / FILES["fp32-fused"]))), work / FILES["fp16"])
    print(
        f"      bge-shape graphs built in {time.perf_counter() - started:.0f} s "
        f"({'HF checkpoint via the converter' if checkpoint else 'numpy weights'}, vocab {vocab})",
        flush=True,
    )
    fixture = read_model_folder(find_model_folders(ROOT / "models-gpu")[0])
    config = dataclasses.replace(
        fixture,
        name="bge-shape",
        type_ids_input=False,
        variants={
            "fp32-fused": Variant(FILES["fp32-fused"], "fp32", "any", True),
            "fp16": Variant(FILES["fp16"], "fp16", "cuda", True),
        },
    )
    shapes = [(64, 200), (8, 32)] if not dry_run else [(4, 16)]
    reps = 20 if not dry_run else 2
    rng = np.random.default_rng(1)
    batches = {}
    for pairs, length in shapes:
        ids = rng.integers(5, vocab - 2, (pairs, length), dtype=np.int64)
        ids[:, 0] = 0
        batches[(pairs, length)] = Batch(ids, np.ones_like(ids), None)
    rows: list[dict] = []

    def record(key: str, path: str, shape: tuple[int, int], ms: float) -> None:
        pairs, length = shape
        tflops = 2 * matmul_params * pairs * length / (ms / 1e3) / 1e12
        rows.append(
            {
                "variant": key,
                "path": path,
                "batch": f"{pairs}x{length}",
                "median_ms": round(ms, 3),
                "pairs_per_s": round(pairs / (ms / 1e3), 1),
                "tflops_weights": round(tflops, 2),
            }
        )
        print(
            f"      {key:10s} {path:24s} {pairs:3d}x{length:<4d} {ms:8.2f} ms  "
            f"{rows[-1]['pairs_per_s']:9.1f} pairs/s  {tflops:6.1f} TFLOP/s",
            flush=True,
        )

    parity_batch = batches[shapes[-1]]
    ours: dict[str, np.ndarray] = {}
    for key in ("fp32-fused", "fp16"):
        if device == "cpu" and key == "fp16":
            continue
        backend = OnnxBackend(work, config, variant=key, device=device)
        ours[key] = backend.run(parity_batch)
        for shape, batch in batches.items():
            feed = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
            record(
                key,
                "backend (I/O binding)" if device == "cuda" else "backend",
                shape,
                _median_ms(lambda backend=backend, batch=batch: backend.run(batch), reps),
            )
            record(
                key,
                "session.run",
                shape,
                _median_ms(lambda session=backend.session, feed=feed: session.run(["logits"], feed), reps),
            )
    levers(work, config, device, dry_run, vocab, reps, record)
    if checkpoint is not None:
        torch_peer(checkpoint, device, batches, parity_batch, ours, record, reps)
    REPORT["throughput"] = rows
    if device == "cuda":
        w1 = {(r["variant"], r["path"]): r["pairs_per_s"] for r in rows if r["batch"] == "64x200"}
        fp16, fp32 = w1[("fp16", "backend (I/O binding)")], w1[("fp32-fused", "backend (I/O binding)")]
        check("fp16 faster than fp32 on CUDA (64x200)", fp16 > fp32, f"{fp16 / fp32:.2f}x")
        if ("fp16", "transformers (torch)") in w1:
            ratio = fp16 / w1[("fp16", "transformers (torch)")]
            REPORT["ours_fp16_over_torch_fp16_64x200"] = round(ratio, 3)
            print(f"      ours fp16 / transformers fp16 at 64x200: {ratio:.2f}x")


def levers(work: Path, config, device: str, dry_run: bool, vocab: int, reps: int, record) -> None:
    """What the issue's GPU levers give on the served variant, measured rather than assumed:

    * padding: 64 pairs of mixed lengths (24-256 tokens) as one batch padded to the longest,
      against the same pairs sorted by length into 4 batches of 16 (what the batcher does);
    * two batches in flight: 8 batches of 64 x 200 run one after the other on one session,
      against two sessions on two threads (host work of one overlapping the other's kernels).

    CUDA graphs (fixed shapes only) and ONNX Runtime's packed attention are not measured: the
    first needs a shape per bucket captured ahead, the second a graph the fused one is not."""
    import concurrent.futures

    key = "fp16" if device == "cuda" else "fp32-fused"
    rng = np.random.default_rng(2)
    pairs = 64 if not dry_run else 8
    lengths = np.sort(rng.integers(24, 257 if not dry_run else 33, pairs))

    def batch_of(rows: np.ndarray) -> Batch:
        longest = int(rows.max())
        ids = np.zeros((len(rows), longest), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, n in enumerate(rows):
            ids[row, :n] = rng.integers(5, vocab - 2, int(n))
            mask[row, :n] = 1
        return Batch(ids, mask, None)

    padded = batch_of(rng.permutation(lengths))
    sorted_batches = [batch_of(part) for part in np.array_split(lengths, 4)]
    backend = OnnxBackend(work, config, variant=key, device=device)
    shape = (pairs, int(lengths.max()))
    record(key, "mixed, padded", shape, _median_ms(lambda: backend.run(padded), reps))
    record(key, "mixed, 4 sorted", shape, _median_ms(lambda: [backend.run(b) for b in sorted_batches], reps))
    length = 200 if not dry_run else 16
    full = [batch_of(np.full(pairs, length)) for _ in range(8)]
    record(key, "8 batches, 1 stream", (8 * pairs, length), _median_ms(lambda: [backend.run(b) for b in full], reps))
    second = OnnxBackend(work, config, variant=key, device=device)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:

        def both() -> None:
            halves = [
                pool.submit(lambda runner=runner, share=full[i::2]: [runner.run(x) for x in share])
                for i, runner in enumerate((backend, second))
            ]
            for half in halves:
                half.result()

        record(key, "8 batches, 2 in flight", (8 * pairs, length), _median_ms(both, reps))


def torch_peer(
    checkpoint: Path, device: str, batches: dict, parity_batch: Batch, ours: dict[str, np.ndarray], record, reps: int
) -> None:
    """The same checkpoint in transformers (PyTorch, SDPA attention): fp32 scores against our
    fp32 graph (TF32 off on both sides), fp16 scores against our fp16 graph, and fp16 speed."""
    import torch
    from transformers import XLMRobertaForSequenceClassification

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    where = "cuda" if device == "cuda" else "cpu"
    sync = torch.cuda.synchronize if where == "cuda" else (lambda: None)
    model = XLMRobertaForSequenceClassification.from_pretrained(checkpoint).eval().to(where)

    def scores(m, batch: Batch) -> np.ndarray:
        with torch.inference_mode():
            out = m(
                input_ids=torch.from_numpy(batch.input_ids).to(where),
                attention_mask=torch.from_numpy(batch.attention_mask).to(where),
            ).logits
        return out.float().cpu().numpy().reshape(-1).astype(np.float64)

    reference = scores(model, parity_batch)
    diff = float(np.max(np.abs(ours["fp32-fused"] - reference)))
    REPORT["bge_shape_fp32_vs_transformers_max_abs"] = diff
    check(f"bge-shape fp32-fused on {device} vs transformers fp32", diff <= 1e-3, f"max |Δ| {diff:.2e}")
    half = model.half() if where == "cuda" else model
    if "fp16" in ours:
        # Reported, not checked: two fp16 kernels on random weights whose scores differ by
        # little more than fp16's own rounding, so rank agreement says little either way.
        result = gate(ours["fp16"], scores(half, parity_batch))
        REPORT["bge_shape_fp16_vs_transformers_fp16"] = result.to_json()
        print(
            f"      info: bge-shape fp16 vs transformers fp16: {json.dumps(result.to_json())}; "
            f"score spread {np.ptp(reference):.3g}"
        )
    key = "fp16" if where == "cuda" else "fp32-fused"
    for shape, batch in batches.items():
        ids = torch.from_numpy(batch.input_ids).to(where)
        mask = torch.from_numpy(batch.attention_mask).to(where)

        def run(ids: torch.Tensor = ids, mask: torch.Tensor = mask) -> None:
            with torch.inference_mode():
                half(input_ids=ids, attention_mask=mask).logits.float().cpu()

        record(key, "transformers (torch)", shape, _median_ms(run, reps, sync))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="run every step on the CPU, tiny sizes")
    args = parser.parse_args()
    started = time.perf_counter()
    REPORT["onnxruntime"] = ort.__version__
    REPORT["machine"] = platform.node()
    try:
        REPORT["gpu"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        REPORT["gpu"] = ""
    print(f"GPU: {REPORT['gpu'] or 'none visible to nvidia-smi'}")
    providers = ort.get_available_providers()
    print(f"onnxruntime {ort.__version__} from {Path(ort.__file__).parent}; providers {providers}")
    device = "cpu" if args.dry_run else "cuda"
    if not args.dry_run and not check("CUDAExecutionProvider available", CUDA in providers, str(providers)):
        return 1
    folders = find_model_folders(ROOT / "models-gpu")
    if not check("converted fixture present in models-gpu/", bool(folders), "run `make gpu-prep` on the CPU machine"):
        return 1
    probes, reference = fixture_checks(folders[0], device)
    service_check(ROOT / "models-gpu", probes, reference)
    throughput(device, args.dry_run)
    REPORT["seconds"] = round(time.perf_counter() - started, 1)
    # A dry run proves the script; its figures are not a result, so they stay out of bench/results.
    default = Path(tempfile.gettempdir()) if args.dry_run else results.RESULTS
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else default
    record = {"date": results.now(), "command": "bash bench/gpu/check.sh " + " ".join(sys.argv[1:]), **REPORT}
    record["cpu"] = f"{cpu_summary()}; GPU {REPORT.get('gpu', 'none')}"
    path = results.save("gpu-check" + ("-dry" if args.dry_run else ""), record, out)
    print(f"\nwrote {path}; {REPORT['seconds']} s")
    print(f"{'ALL PASS' if not FAILURES else 'FAILED: ' + ', '.join(FAILURES)}")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
