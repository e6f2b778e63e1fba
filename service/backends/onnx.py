"""ONNX Runtime backend: one session per model, on CUDA when available, else on the CPU.

The backend's only job is ``run(batch) -> logits``. Which graph variant runs, and on which
execution provider, is decided here from what the model folder offers and what this machine
has (``onnxruntime-gpu`` with a visible GPU selects CUDA and the fp16 graph).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from rerank.service.backends.base import Batch, graph_feed
from rerank.service.model_folder import ATTENTION_MASK, INPUT_IDS, ModelFolderConfig, Variant

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

# Preference order when the server is free to choose.
CPU_PREFERENCE = ("fp32-fused", "fp32")
CUDA_PREFERENCE = ("fp16", "fp32-fused", "fp32")


def available_device() -> str:
    """``cuda`` when this ONNX Runtime build has the CUDA provider *and* the NVIDIA driver sees a
    GPU, else ``cpu``. (An ``onnxruntime-gpu`` install on a machine without a GPU lists the CUDA
    provider; choosing it there would serve the fp16 graph on the CPU.)"""
    return "cuda" if CUDA in ort.get_available_providers() and cuda_devices() > 0 else "cpu"


def cuda_devices() -> int:
    """GPUs the NVIDIA driver reports (0 without a driver)."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


@functools.cache  # once per process, however many models are loaded
def _preload_cuda_libraries() -> None:
    """Loads CUDA and cuDNN from the ``nvidia-*`` wheels (``pip install onnxruntime-gpu[cuda,cudnn]``)
    when they are installed, so no LD_LIBRARY_PATH is needed; a system CUDA is used otherwise."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as exc:  # noqa: BLE001 - a system-wide CUDA may still be found by the loader
        log.info("onnxruntime.preload_dlls: %s", exc)


def choose_variant(config: ModelFolderConfig, device: str, requested: str | None = None) -> str:
    """Picks the graph variant to serve: ``requested`` if given, else the best one for ``device``."""
    if requested:
        if requested not in config.variants:
            raise ValueError(f"model {config.name!r} has no variant {requested!r}; it has {sorted(config.variants)}")
        return requested
    for key in CUDA_PREFERENCE if device == "cuda" else CPU_PREFERENCE:
        variant = config.variants.get(key)
        if variant and variant.device in ("any", device):
            return key
    return "fp32"


class OnnxBackend:
    """Runs one model folder's chosen graph (a :class:`~rerank.service.backends.base.Backend`)."""

    streams = 1
    """One micro-batch at a time, on every thread (a session's intra-op pool is shared by
    concurrent runs; on CUDA one stream keeps the GPU busy)."""

    def __init__(
        self,
        folder: Path,
        config: ModelFolderConfig,
        *,
        variant: str | None = None,
        device: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.device = device or available_device()
        self.variant_key = choose_variant(config, self.device, variant)
        self.variant: Variant = config.variants[self.variant_key]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Inference runs one micro-batch at a time per model, so every core goes to intra-op work.
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        providers: list[str | tuple[str, dict[str, str]]] = [CPU]
        if self.device == "cuda":
            _preload_cuda_libraries()
            # TF32 matmuls would move fp32 scores by ~1e-3; fp32 is what a caller asks for when
            # they want the model's exact scores (fp16 is the fast variant).
            cuda_options = {"cudnn_conv_algo_search": "DEFAULT", "use_tf32": "0"}
            providers = [(CUDA, cuda_options), CPU]
        self.session = ort.InferenceSession(str(folder / self.variant.file), options, providers=providers)
        self.provider = self.session.get_providers()[0]
        self.input_names = {i.name for i in self.session.get_inputs()}
        missing = {INPUT_IDS, ATTENTION_MASK} - self.input_names
        if missing:
            raise ValueError(f"{folder / self.variant.file}: the graph has no input {sorted(missing)[0]!r}")
        self.precision = self.variant.precision
        template = config.template
        self._warm_up_ids = [i for i, _ in template.prefix + template.middle + template.suffix] or [template.pad_id]
        log.info("loaded %s variant %s (%s) on %s", config.name, self.variant_key, self.variant.file, self.provider)

    def _feed(self, batch: Batch) -> dict[str, np.ndarray]:
        return graph_feed(batch, self.input_names)

    def run(self, batch: Batch) -> np.ndarray:
        """Returns float64 logits ``[pairs]`` for ``batch``."""
        if self.provider == CUDA:
            return self._run_cuda(batch)
        (logits,) = self.session.run(["logits"], self._feed(batch))
        return np.asarray(logits, dtype=np.float64).reshape(-1)

    def warm_up(self, most_tokens: int) -> None:
        """One tiny batch (the pair template's special tokens), so that the first request does
        not pay for ONNX Runtime's lazy initialisation."""
        ids = np.asarray([self._warm_up_ids], dtype=np.int64)
        self.run(Batch(ids, np.ones_like(ids), np.zeros_like(ids)))

    def _run_cuda(self, batch: Batch) -> np.ndarray:
        """I/O binding: inputs are copied to the GPU once and the output stays there until the
        final copy, instead of ONNX Runtime staging every tensor through host buffers."""
        binding = self.session.io_binding()
        for name, array in self._feed(batch).items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), "cuda", 0))
        binding.bind_output("logits", "cuda", 0)
        self.session.run_with_iobinding(binding)
        (logits,) = binding.copy_outputs_to_cpu()
        return np.asarray(logits, dtype=np.float64).reshape(-1)
