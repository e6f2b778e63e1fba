#!/usr/bin/env bash
# GPU check for the CUDA path (run on a machine with an NVIDIA GPU; < 5 minutes).
#
#   bash bench/gpu_check.sh            # from the repository root
#   bash bench/gpu_check.sh --dry-run  # every step on the CPU, tiny sizes (proves the script)
#
# What it proves, printing PASS/FAIL for each (bench/gpu_check.py):
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
# Needs python3 with numpy, onnx, onnxruntime-gpu, tokenizers, grpcio and the grpc/protobuf
# extras of pyproject.toml, and models-gpu/ (`make gpu-prep` on the CPU machine). For a machine
# without a package index: wheels in .whl/ are installed into /tmp/site, and an onnxruntime-gpu
# packed by tools/pack_onnxruntime_gpu.sh (parts in .ortgpu/ or /tmp/ortgpu-parts/) is unpacked there.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/gpu_env.sh
exec python3 -m bench.gpu_check "$@"
