"""rerank's gRPC reranking service.

Where things are:

* ``router/``: the API faces (``rerank_service.py``), request validation (``validation.py``),
  API keys (``auth.py``) and their limits (``limits.py``), the edge's check that Envoy asks
  before reading a body (``edge.py``), the error -> status table (``status.py``) and the metrics
  port (``metrics_endpoint.py``);
* ``admission/``: whether a request may wait for the model (the cost estimate, the one refusal
  rule, the places held for bodies on their way) and the contract with the gateway
  (``contract.py``);
* ``core/``: tokenization (``tokenization.py``) -> admission -> the queue and dynamic batching
  (``batching.py``: fair composition in ``scheduler.py``, the model's threads in ``worker.py``)
  -> inference, and ranking (``reranker.py``);
* ``backends/``: what runs the model (``onnx.py``: ONNX Runtime, CPU or CUDA; ``openvino.py``:
  OpenVINO on the CPU), behind the protocol in ``base.py``; ``loader.py`` picks the variant
  (timing the candidates at start-up) and is the only module that names a concrete backend;
  ``cpu_features.py`` reads the CPU's AMX / AVX-512 BF16 / VNNI flags;
* ``telemetry/``: logs, traces and the request context, below the core and the router;
* ``server.py`` assembles them; ``settings.py`` declares every setting; ``main.py`` is
  ``rerank-serve``. Each layer imports only those below it (``tests/unit/test_import_rules.py``).

Build-time tools (``rerank-convert``, the benchmarks) use only the declared surface:
:mod:`rerank.service.model_folder` (the model folder's schema) and :mod:`rerank.service.scoring` (scoring
pairs through the serving path).
"""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("rerank")
except metadata.PackageNotFoundError:  # pragma: no cover - only a checkout that was never installed
    __version__ = "0+unknown"
