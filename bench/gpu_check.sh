#!/usr/bin/env bash
# GPU check for the CUDA path (run on a machine with an NVIDIA GPU; < 5 minutes).
#
#   bash bench/gpu_check.sh            # from the repository root
#
# What it proves, printing PASS/FAIL for each:
#  1. onnxruntime-gpu sees CUDAExecutionProvider;
#  2. the service's backend picks the fp16 variant on CUDA and runs it with I/O binding;
#  3. fp16-on-CUDA scores agree with fp32-on-CPU for a converted fixture model (Spearman >= 0.99,
#     same top 3) — the same gate the converter applies;
#  4. throughput of a bge-reranker-v2-m3-shaped graph (24 x 1024, random weights built here with
#     numpy, no torch needed), fp16 fused on CUDA vs fp32 on CUDA, W1-like batches (64 x ~200 tokens).
#
# Needs: python3 with numpy, onnx, onnxruntime-gpu, tokenizers, grpcio, protobuf, googleapis-common-protos,
# grpcio-status/health-checking/reflection. Wheels in .whl/ (see the device notes) are installed first
# if present. A converted fixture folder is expected in models-gpu/ (make gpu-prep builds it on the CPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec python3 -m bench.gpu_check "$@"
