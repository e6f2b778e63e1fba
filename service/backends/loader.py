"""Picks and loads the backend for a model folder; the only place that names concrete backends.

Which variant a model is served with, unless ``RERANK_VARIANT`` names one:

* **CUDA** (ONNX Runtime): ``fp16`` if it passed its gate, else ``fp32-fused``, else ``fp32``.
* **CPU**: the candidates are every CPU variant that is exact (fp32, on either runtime; the plain
  ``fp32`` graph not beside another for models reading over :data:`QUADRATIC_ATTENTION_LENGTH`
  tokens) or that passed the current gate against fp32 (``Variant.passed_gate``), whose runtime
  is installed (OpenVINO is a dependency wherever PyPI has its wheels,
  :data:`OPENVINO_PLATFORMS`; elsewhere :func:`runtime_note` says so in the log) and whose
  arithmetic this CPU runs natively (:func:`runs_natively`: emulated bf16 is slower than fp32).
  The fastest is served: by the converter's timing table when it was measured on this CPU
  (:func:`table_choice`), else by timing a few micro-batches of each at start-up, interleaved
  (:func:`time_candidates`). With one candidate nothing is timed.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path
from typing import Any

from rerank.service.backends.base import Backend, Batch, VariantChoice, timed_runs
from rerank.service.backends.cpu_features import CpuFeatures, detect
from rerank.service.model_folder import OPENVINO, ModelFolderConfig, Variant

TIMING_ROUNDS = 5
"""Micro-batches timed per candidate (after one untimed run); the fastest round counts, since
on a shared machine the slow rounds measure the neighbours."""
TIMING_BUDGET_SECONDS = 20.0
"""After two rounds, timing stops once it has taken this long (a large model's micro-batch
takes seconds on a few cores; start-up should not take minutes)."""
MIN_ROUNDS = 2
TIMING_PAIRS = 32
TIMING_LENGTH = 192
"""The timed micro-batch: 32 pairs x min(192, max_length) tokens, about what the batcher packs
from a request of ~150-word documents. Smaller batches rank the candidates by per-call overheads,
which weigh less in the batches the server runs."""


QUADRATIC_ATTENTION_LENGTH = 1024
"""Longest pairs for which the plain ``fp32`` graph stays a CPU candidate beside another exact
graph (``fp32-fused``, ``ov-fp32``): its attention's memory grows with the square of a pair's
length, and at 512 tokens, where the micro-batch size bounds it, it can be the fastest."""

OPENVINO_PLATFORMS = frozenset({("linux", "x86_64"), ("linux", "aarch64"), ("win32", "AMD64"), ("darwin", "arm64")})
"""(``sys.platform``, ``platform.machine()``) where PyPI has OpenVINO's wheels, and where
pyproject.toml therefore makes it a dependency (a unit test keeps the two the same)."""


def runtime_note(device: str | None) -> str | None:
    """One line for the log when the CPU serves without OpenVINO, saying why; else None."""
    if _device(device) != "cpu" or runtime_available(OPENVINO):
        return None
    here = (sys.platform, platform.machine())
    if here in OPENVINO_PLATFORMS:
        return (
            "OpenVINO is not installed, so models run on ONNX Runtime only; install it (pip install openvino, "
            "a dependency of rerank on this platform) for the faster OpenVINO variants"
        )
    return f"OpenVINO has no package for {here[0]} {here[1]} on PyPI, so models run on ONNX Runtime only"


def _device(device: str | None) -> str:
    from rerank.service.backends.onnx import available_device

    return device or available_device()


def runtime_available(runtime: str) -> bool:
    """Whether ``runtime``'s package is installed (ONNX Runtime always is)."""
    if runtime == OPENVINO:
        from rerank.service.backends.openvino import available

        return available()
    return True


def runs_natively(variant: Variant, cpu: CpuFeatures) -> bool:
    """Whether this CPU has the instructions that make ``variant`` pay: bf16 needs AMX-BF16 or
    AVX-512 BF16; OpenVINO's int8 needs VNNI or AMX-INT8. ONNX Runtime's dynamic int8 runs on
    AVX2's ``vpmaddubsw`` pairs too (about twice its fp32 GEMMs' speed)."""
    if variant.precision in ("bf16", "bf16-mixed"):
        return cpu.native_bf16
    if variant.precision == "int8" and variant.runtime == OPENVINO:
        return cpu.native_int8
    return True


def candidate_variants(
    config: ModelFolderConfig, *, variant: str | None, device: str | None, cpu: CpuFeatures | None = None
) -> list[str]:
    """The variants the server may serve for these settings, in order of preference (the first
    wins a tie); raises ``ValueError`` for a variant that cannot run here."""
    device = _device(device)
    if variant:
        if variant not in config.variants:
            raise ValueError(f"model {config.name!r} has no variant {variant!r}; it has {sorted(config.variants)}")
        chosen = config.variants[variant]
        if not runtime_available(chosen.runtime):
            raise ValueError(
                f"variant {variant!r} of model {config.name!r} runs on {chosen.runtime}, which is not installed "
                "(pip install 'rerank[openvino]')"
            )
        if chosen.runtime == OPENVINO and device != "cpu":
            raise ValueError(f"variant {variant!r} runs on the CPU (OpenVINO), not on {device}")
        return [variant]
    if device == "cuda":
        for key in ("fp16", "fp32-fused"):
            found = config.variants.get(key)
            # An fp16 graph from before the per-query gate passed the gate of its day.
            if found and found.runtime != OPENVINO and (found.exact or found.gate.get("passed")):
                return [key]
        return ["fp32"]
    cpu = cpu or detect()
    keys = [
        key
        for key, v in config.variants.items()
        if v.device in ("any", "cpu")
        and (v.exact or v.passed_gate)
        and runtime_available(v.runtime)
        and runs_natively(v, cpu)
    ]
    if "fp32" in keys and {"fp32-fused", "ov-fp32"} & set(keys) and config.max_length > QUADRATIC_ATTENTION_LENGTH:
        # They score as it does, in memory that grows with a pair's length; on ONNX Runtime the
        # plain graph's attention holds every [pairs, heads, S, S] score tensor (9 GB for one
        # 8,192-token pair at bge-m3's shape), so a close timing must not pick it.
        keys.remove("fp32")
    # Ties go to today's default, then the other exact graphs, then the rest as listed.
    preference = {"fp32-fused": 0, "fp32": 1, "ov-fp32": 2}
    return sorted(keys, key=lambda k: preference.get(k, 3)) or ["fp32"]


def select_variant(config: ModelFolderConfig, *, variant: str | None, device: str | None) -> str:
    """The variant served when nothing is timed: the first candidate."""
    return candidate_variants(config, variant=variant, device=device)[0]


def load_backend(
    folder: Path,
    config: ModelFolderConfig,
    *,
    variant: str | None,
    device: str | None,
    threads: int | None,
    streams: int | None = None,
) -> Backend:
    """The backend that runs ``folder``'s variant (default: :func:`select_variant`'s) on this machine."""
    key = variant or select_variant(config, variant=None, device=device)
    if key not in config.variants:
        raise ValueError(f"model {config.name!r} has no variant {key!r}; it has {sorted(config.variants)}")
    if config.variants[key].runtime == OPENVINO:
        if not runtime_available(OPENVINO):
            raise ValueError(f"variant {key!r} needs OpenVINO, which is not installed (pip install 'rerank[openvino]')")
        from rerank.service.backends.openvino import OpenVinoBackend

        return OpenVinoBackend(folder, config, variant=key, threads=threads, streams=streams)
    from rerank.service.backends.onnx import OnnxBackend

    return OnnxBackend(folder, config, variant=key, device=device, threads=threads)


def timing_batch(config: ModelFolderConfig) -> Batch:
    """The micro-batch candidates are timed on (one token repeated: speed does not depend on it)."""
    return Batch.filled(TIMING_PAIRS, min(TIMING_LENGTH, config.max_length), config.template.timing_token)


def cpu_signature(cpu: CpuFeatures) -> dict[str, Any]:
    """What a timing table's CPU must match: its model name and feature flags."""
    return {"model": cpu.model, "flags": cpu.flags()}


def table_choice(config: ModelFolderConfig, keys: list[str], cpu: CpuFeatures) -> VariantChoice | None:
    """The fastest of ``keys`` by the converter's timing table (:attr:`ModelFolderConfig.speed`)
    when it was measured on this CPU and times every one of them; else None (time at start-up).
    A table makes the choice the same on every replica and every restart: start-up timing on a
    busy machine can flip between candidates a few percent apart, and then two replicas of one
    model answer the same request with (slightly) different scores."""
    table = config.speed
    times = table.get("milliseconds", {})
    if len(keys) < 2 or table.get("cpu") != cpu_signature(cpu) or not set(keys) <= set(times):
        return None
    winner = min(keys, key=lambda k: (times[k], keys.index(k)))
    return VariantChoice(
        winner,
        f"fastest of {len(keys)} candidates in the converter's timing table (this CPU, "
        f"{table['batch'][0]} x {table['batch'][1]} micro-batch)",
        {key: float(times[key]) for key in keys},
    )


def measure(backends: dict[str, Backend], config: ModelFolderConfig) -> dict[str, float]:
    """Best seconds per :func:`timing_batch` of each backend with all its streams busy (a
    two-stream backend runs two at once: its time is half of what two take), in rotated order
    each round so that a busy moment of the machine does not fall on one candidate only."""
    keys = list(backends)
    batch = timing_batch(config)
    for backend in backends.values():
        timed_runs(backend.run, batch, streams=backend.streams)  # first runs: lazy initialisation, kernels
    best = {key: float("inf") for key in keys}
    began = time.perf_counter()
    for round_ in range(TIMING_ROUNDS):
        if round_ >= MIN_ROUNDS and time.perf_counter() - began > TIMING_BUDGET_SECONDS:
            break
        for key in keys[round_ % len(keys) :] + keys[: round_ % len(keys)]:
            streams = backends[key].streams
            best[key] = min(best[key], timed_runs(backends[key].run, batch, streams=streams) / streams)
    return best


def time_candidates(backends: dict[str, Backend], config: ModelFolderConfig, *, pinned: bool = False) -> VariantChoice:
    """Times every backend (:func:`measure`); the fastest wins (the first listed on a tie). One
    backend is chosen without timing."""
    keys = list(backends)
    if len(keys) == 1:
        reason = "pinned by RERANK_VARIANT" if pinned else "the only candidate"
        return VariantChoice(keys[0], reason, {})
    best = measure(backends, config)
    winner = min(keys, key=lambda k: (best[k], keys.index(k)))
    batch = timing_batch(config).input_ids.shape
    return VariantChoice(
        winner,
        f"fastest of {len(keys)} candidates on a {batch[0]} x {batch[1]} micro-batch at start-up",
        {key: seconds * 1e3 for key, seconds in best.items()},
    )
