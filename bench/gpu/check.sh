#!/usr/bin/env bash
# GPU check for the CUDA path (on a machine with an NVIDIA GPU; < 5 minutes). `make gpu-check`.
#
#   bash bench/gpu/check.sh            # from the repository root, after `make gpu-prep`
#   bash bench/gpu/check.sh --dry-run  # every step on the CPU, tiny sizes (proves the script)
#
# What it proves, printing PASS/FAIL for each (bench/gpu/check.py):
#  1. onnxruntime-gpu sees CUDAExecutionProvider;
#  2. the service's backend, left to choose, picks the fp16 variant on CUDA (I/O binding) and it
#     passes the converter's gate against fp32 on the CPU; fp32 on CUDA (TF32 off) matches the CPU;
#  3. the real server (python -m rerank.service) on the GPU: ListModels shows the variant and provider,
#     a gRPC Rerank ranks like fp32 on the CPU;
#  4. throughput of a bge-reranker-v2-m3-shaped graph (24 x 1024, random weights built with
#     numpy), fused fp32 vs fp16 on CUDA, 64x200 (W1-like) and 8x32 (W3-like) batches, against
#     transformers fp16 (SDPA) when torch is there; and two levers: a mixed-length batch padded
#     vs sorted into 4 batches, and 8 batches on one session vs two sessions in flight.
#
# Runs with .venv's Python (make install). On a machine with an NVIDIA GPU (nvidia-smi answers)
# whose .venv has the CPU onnxruntime, it swaps in the newest onnxruntime-gpu from the package
# index first (the two cannot be installed side by side; PyPI's GPU build may lag a release),
# and puts the CPU build back if that install fails. Elsewhere it changes nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
cuda() { "$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; }
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && ! cuda 2>/dev/null; then
  version=$("$PY" -c "from importlib.metadata import version; print(version('onnxruntime'))")
  echo "installing onnxruntime-gpu in place of onnxruntime $version"
  "$PY" -m pip uninstall -q -y onnxruntime
  if ! "$PY" -m pip install -q onnxruntime-gpu; then
    "$PY" -m pip install -q "onnxruntime==$version"
    echo "onnxruntime-gpu did not install; onnxruntime $version is back" >&2
    exit 1
  fi
fi
# CUDA and cuDNN from the nvidia-* wheels beside onnxruntime-gpu (onnxruntime.preload_dlls
# covers the usual layouts; this covers the rest).
nvlibs=$("$PY" - <<'PY'
import glob, os, site
dirs = {os.path.dirname(p) for sp in site.getsitepackages()
        for p in glob.glob(os.path.join(sp, "nvidia", "**", "lib*.so*"), recursive=True)}
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH=${nvlibs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
exec "$PY" -m bench.gpu.check "$@"
