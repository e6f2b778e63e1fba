"""OpenVINO runtime backend: a model folder's ONNX graph on the CPU's matrix units.

ONNX Runtime's CPU provider runs fp32 GEMMs on MLAS and has no bf16 path; OpenVINO's CPU plugin
compiles the same ONNX file with oneDNN and runs it at the variant's precision:

* ``fp32``: ``INFERENCE_PRECISION_HINT=f32``; scores equal ONNX Runtime fp32 within ~1e-5;
* ``bf16``: matrix products in bf16 on AMX tiles or AVX-512 BF16 dot products, accumulation,
  softmax and LayerNorm statistics in fp32;
* ``bf16-mixed``: a graph split in two at the tensor named :data:`BF16_UNTIL` (variant
  ``ov-bf16-split``), the part that computes it at precision bf16 and the rest at f32 (two
  compiled models, run one after the other); or, without that tensor (``ov-bf16-mixed``), a
  graph whose chosen matrix products take bf16 inputs, at precision f32: those products in
  bf16, the rest f32 (:mod:`rerank.converters.mixed_precision` writes both kinds);
* ``int8``: a graph with QuantizeLinear/DequantizeLinear pairs (``rerank.converters.quantize``) runs
  its MatMuls in int8 (AMX-INT8 / VNNI); what is left unquantised runs in f32. A graph with int8
  weights alone (``ov-int8-dynamic``, ``rerank.converters.int8_weights``) keeps them in int8 and
  rounds the activations of those products to int8 as it runs (:data:`DYNAMIC_QUANTIZATION_GROUP`).

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

from rerank.service.backends.base import Batch, graph_feed
from rerank.service.model_folder import ATTENTION_MASK, BF16_UNTIL, INPUT_IDS, ModelFolderConfig, Variant

log = logging.getLogger(__name__)

PROVIDER = "OpenVINO CPU"
HINTS = {"fp32": "f32", "bf16": "bf16", "bf16-mixed": "f32", "int8": "f32"}
"""``INFERENCE_PRECISION_HINT`` per variant precision (int8: the unquantised rest stays f32;
bf16-mixed: the graph's own casts say which products run in bf16, the rest stays f32)."""
DYNAMIC_QUANTIZATION_GROUP = 128
"""``DYNAMIC_QUANTIZATION_GROUP_SIZE``: activations that share one int8 scale when a product with
int8 weights runs (it touches no other product). 128 rather than OpenVINO's default of 32: faster
and closer to fp32 on the 0.6B Qwen3 shape (docs/performance.md, "int8 weights")."""
DEFAULT_STREAMS = 2
"""Micro-batches run at once unless ``RERANK_STREAMS`` says otherwise (never more than threads)."""
SHAPE_CACHE = 32
"""``CPU_RUNTIME_CACHE_CAPACITY``: input shapes whose prepared operators the CPU plugin keeps.
The batcher pads to each micro-batch's longest pair, so a server meets thousands of shapes, and
each kept shape holds memory: at OpenVINO's default of 5,000 a served model grew by megabytes
a new shape without end. A kept shape met again runs as fast as before, and preparing one again
cost no throughput under the overload bench (docs/performance.md, "Overload", the RSS note)."""
KERNEL_CACHE = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")
"""oneDNN's own cache of built kernels (1,024 by default), which grew the same way below the
plugin's: bounded through its environment variable (an operator's own value is kept), read
when the process builds its first kernel."""
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
            "CPU_RUNTIME_CACHE_CAPACITY": SHAPE_CACHE,
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": DYNAMIC_QUANTIZATION_GROUP,
        }
        if self.streams == 1:
            properties["PERFORMANCE_HINT"] = "LATENCY"  # one stream on every thread
        else:
            properties["NUM_STREAMS"] = self.streams
        started = time.perf_counter()
        compiled = compile_variant(folder, self.variant, properties)
        self.parts = [part for part, _ in compiled]
        """The compiled models a batch runs through in turn (one, or a bf16-mixed graph's two)."""
        self.compiled = self.parts[0]
        self.compile_seconds = time.perf_counter() - started
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]
        missing = {INPUT_IDS, ATTENTION_MASK} - set(self.input_names)
        if missing:
            raise ValueError(f"{folder / self.variant.file}: the graph has no input {sorted(missing)[0]!r}")
        self._part_inputs = [[port.get_any_name() for port in part.inputs] for part in self.parts]
        self._output = self.parts[-1].output(0)
        self.execution_precision = " then ".join(_precision(part) for part in self.parts)
        """What OpenVINO says it computes in: ``f32`` or ``bf16`` (a split graph: ``bf16 then f32``)."""
        if any(hint == "bf16" != _precision(part) for part, hint in compiled):
            # OpenVINO quietly runs a bf16 hint in f32 on a CPU without bf16 units: serving that
            # as "bf16" would claim a speed-up and a gate that are not this machine's.
            raise ValueError(f"variant {variant!r}: this CPU cannot run bf16 (OpenVINO runs it in f32)")
        self._requests: queue.SimpleQueue[list[Any]] = queue.SimpleQueue()
        """One infer request per stream and part: a run takes one set, so concurrent runs use
        different streams."""
        for _ in range(self.streams):
            self._requests.put([part.create_infer_request() for part in self.parts])
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
        feed = graph_feed(batch, self.input_names)
        return {name: np.ascontiguousarray(feed[name], dtype=np.int64) for name in self.input_names}

    def run(self, batch: Batch) -> np.ndarray:
        """float64 logits ``[pairs]`` for ``batch``, on a free stream (thread-safe)."""
        requests = self._requests.get()
        try:
            values: dict[str, Any] = self._feed(batch)
            for part, request, inputs in zip(self.parts, requests, self._part_inputs, strict=True):
                result = request.infer({name: values[name] for name in inputs})
                values.update({port.get_any_name(): result[port] for port in part.outputs})
            return np.asarray(result[self._output], dtype=np.float64).reshape(-1)
        finally:
            self._requests.put(requests)

    def warm_up(self, most_tokens: int) -> None:
        """Runs a few typical shapes once, so the first requests do not pay for kernel creation:
        those of :data:`WARM_UP_SHAPES` within ``most_tokens`` (the smallest at least)."""
        for pairs, length in WARM_UP_SHAPES:
            if pairs * length <= most_tokens or (pairs, length) == WARM_UP_SHAPES[0]:
                self.run(Batch.filled(pairs, length, self._warm_up_token))


def compile_variant(folder: Path, variant: Variant, properties: dict[str, Any]) -> list[tuple[Any, str]]:
    """``variant``'s graph compiled for the CPU plugin with ``properties``, each part with the
    precision hint it asked for: one compiled model, or a split bf16-mixed graph's two (run in
    turn)."""
    import openvino as ov

    os.environ.setdefault(*KERNEL_CACHE)
    core = ov.Core()
    model = core.read_model(str(folder / variant.file))
    parts = [(model, HINTS[variant.precision])]
    # Split at BF16_UNTIL: OpenVINO's CPU plugin has one precision per compiled model, and at
    # bf16 it puts every matrix product in bf16 whatever the graph marks.
    if variant.precision == "bf16-mixed" and _producer(model, BF16_UNTIL) is not None:
        parts = list(zip(split_at(model, BF16_UNTIL), ("bf16", "f32"), strict=True))
    return [
        (core.compile_model(part, "CPU", {**properties, "INFERENCE_PRECISION_HINT": hint}), hint)
        for part, hint in parts
    ]


def _precision(compiled: Any) -> str:
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    return str(hint.to_string() if hasattr(hint, "to_string") else hint)


def _producer(model: Any, tensor: str) -> Any:
    """The output port that computes the tensor named ``tensor`` in ``model``, or None."""
    for node in model.get_ordered_ops():
        for port in node.outputs():
            if tensor in port.get_names():
                return port
    return None


def split_at(model: Any, tensor: str) -> tuple[Any, Any]:
    """``model`` (an ``ov.Model``, changed) cut at the tensor named ``tensor``: a model from the
    inputs to that tensor, and one from that tensor (an input of the same name) and the inputs it
    still reads to the outputs."""
    import openvino as ov

    head_model = model.clone()
    head = ov.Model([ov.opset13.result(_producer(head_model, tensor))], head_model.get_parameters(), "head")
    port = _producer(model, tensor)
    parameter = ov.opset13.parameter(port.get_partial_shape(), port.get_element_type(), name=tensor)
    parameter.output(0).set_names({tensor})
    for target in list(port.get_target_inputs()):
        target.replace_source_output(parameter.output(0))
    reached: set[str] = set()
    nodes = list(model.get_results())
    while nodes:
        node = nodes.pop()
        if node.get_name() not in reached:
            reached.add(node.get_name())
            nodes.extend(i.get_source_output().get_node() for i in node.inputs())
    inputs = [parameter] + [p for p in model.get_parameters() if p.get_name() in reached]
    return head, ov.Model(model.get_results(), inputs, "tail")
