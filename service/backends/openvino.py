"""OpenVINO runtime backend: a model folder's ONNX graph on the CPU's matrix units.

ONNX Runtime's CPU provider runs fp32 GEMMs on MLAS and has no bf16 path; OpenVINO's CPU plugin
compiles the same ONNX file with oneDNN and runs it at the variant's precision:

* ``fp32``: ``INFERENCE_PRECISION_HINT=f32``; scores equal ONNX Runtime fp32 within ~1e-5;
* ``bf16``: matrix products in bf16 on AMX tiles or AVX-512 BF16 dot products, accumulation,
  softmax and LayerNorm statistics in fp32;
* ``bf16-mixed``: a graph whose chosen matrix products take bf16 inputs
  (:mod:`rerank.converters.mixed_precision`), at precision f32: those products in bf16, the rest f32;
* ``int8``: a graph with QuantizeLinear/DequantizeLinear pairs (``rerank.converters.quantize``) runs
  its MatMuls in int8 (AMX-INT8 / VNNI); what is left unquantised runs in f32.

The precision hint is always set: on a CPU with AVX-512 BF16 or AMX, OpenVINO's *default* is
bf16, which would silently change an "exact" variant's scores.

It reads the plain ``model.onnx`` (OpenVINO fuses attention itself; the fused graph's
``com.microsoft`` ops gain it nothing). Shapes stay dynamic: the CPU plugin keeps kernels per
input shape, so a new (pairs, length) costs a first run's kernel selection, not a recompilation.

**Streams.** By default it runs two micro-batches at once (``NUM_STREAMS=2``, half the threads
each; :attr:`OpenVinoBackend.streams`), and the batcher keeps both busy: two threads that meet at
a barrier after every operator wait for each other, one thread per batch never does. A small
request is split over the idle streams. ``RERANK_STREAMS=1`` gives one stream on every thread.
(Figures: docs/performance.md, "Batching".)
"""

from __future__ import annotations

import importlib.util
import logging
import os
import queue
import time
from pathlib import Path
from typing import Any

import numpy as np

from rerank.service.backends.base import Batch
from rerank.service.model_folder import ModelFolderConfig, Variant

log = logging.getLogger(__name__)

PROVIDER = "OpenVINO CPU"
HINTS = {"fp32": "f32", "bf16": "bf16", "bf16-mixed": "f32", "int8": "f32"}
"""``INFERENCE_PRECISION_HINT`` per variant precision (int8: the unquantised rest stays f32;
bf16-mixed: the graph's own casts say which products run in bf16, the rest stays f32)."""
DEFAULT_STREAMS = 2
"""Micro-batches run at once unless ``RERANK_STREAMS`` says otherwise (never more than threads)."""
WARM_UP_SHAPES = ((1, 16), (8, 32), (32, 224))
"""(pairs, length) shapes run once by :meth:`OpenVinoBackend.warm_up`: short, W3-like, W1-like."""


def available() -> bool:
    """Whether the ``openvino`` package (extra ``openvino``) is installed."""
    return importlib.util.find_spec("openvino") is not None


class OpenVinoBackend:
    """Runs one model folder variant with OpenVINO on the CPU (a :class:`~rerank.service.backends.base.Backend`)."""

    provider = PROVIDER

    def __init__(
        self,
        folder: Path,
        config: ModelFolderConfig,
        *,
        variant: str,
        threads: int | None = None,
        streams: int | None = None,
    ) -> None:
        import openvino as ov

        if variant not in config.variants:
            raise ValueError(f"model {config.name!r} has no variant {variant!r}; it has {sorted(config.variants)}")
        self.variant_key = variant
        self.variant: Variant = config.variants[variant]
        if self.variant.precision not in HINTS:
            raise ValueError(
                f"variant {variant!r}: OpenVINO runs fp32, bf16, bf16-mixed or int8, not {self.variant.precision!r}"
            )
        self.precision = self.variant.precision
        self.threads = threads or os.cpu_count() or 1
        self.streams = max(1, min(self.threads, streams or DEFAULT_STREAMS))
        """Micro-batches run at once, each on ``threads // streams`` threads."""
        properties: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": HINTS[self.precision],
            "INFERENCE_NUM_THREADS": self.threads,
        }
        if self.streams == 1:
            properties["PERFORMANCE_HINT"] = "LATENCY"  # one stream on every thread
        else:
            properties["NUM_STREAMS"] = self.streams
        started = time.perf_counter()
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(folder / self.variant.file)), "CPU", properties)
        self.compile_seconds = time.perf_counter() - started
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]
        missing = {"input_ids", "attention_mask"} - set(self.input_names)
        if missing:
            raise ValueError(f"{folder / self.variant.file}: the graph has no input {sorted(missing)[0]!r}")
        self._output = self.compiled.output(0)
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.execution_precision = str(hint.to_string() if hasattr(hint, "to_string") else hint)
        """What OpenVINO says it computes in: ``f32`` or ``bf16``."""
        if self.precision == "bf16" and self.execution_precision != "bf16":
            # OpenVINO quietly runs a bf16 hint in f32 on a CPU without bf16 units: serving that
            # as "bf16" would claim a speed-up and a gate that are not this machine's.
            raise ValueError(f"variant {variant!r}: this CPU cannot run bf16 (OpenVINO runs it in f32)")
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        """One infer request per stream: a run takes one, so concurrent runs use different streams."""
        for _ in range(self.streams):
            self._requests.put(self.compiled.create_infer_request())
        self._warm_up_token = config.template.timing_token
        log.info(
            "loaded %s variant %s (%s) on %s at %s, %d threads in %d streams, compiled in %.2f s",
            config.name,
            variant,
            self.variant.file,
            PROVIDER,
            self.execution_precision,
            self.threads,
            self.streams,
            self.compile_seconds,
        )

    def _feed(self, batch: Batch) -> dict[str, np.ndarray]:
        feed = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if "token_type_ids" in self.input_names:
            feed["token_type_ids"] = (
                batch.token_type_ids if batch.token_type_ids is not None else np.zeros_like(batch.input_ids)
            )
        return {name: np.ascontiguousarray(feed[name], dtype=np.int64) for name in self.input_names}

    def run(self, batch: Batch) -> np.ndarray:
        """float64 logits ``[pairs]`` for ``batch``, on a free stream (thread-safe)."""
        request = self._requests.get()
        try:
            result = request.infer(self._feed(batch))
            return np.asarray(result[self._output], dtype=np.float64).reshape(-1)
        finally:
            self._requests.put(request)

    def warm_up(self) -> None:
        """Runs a few typical shapes once, so the first requests do not pay for kernel creation."""
        for pairs, length in WARM_UP_SHAPES:
            self.run(Batch.filled(pairs, length, self._warm_up_token))
