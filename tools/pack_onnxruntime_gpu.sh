#!/usr/bin/env bash
# Packs onnxruntime-gpu for a GPU test machine that cannot reach PyPI and takes files in
# small loads: the wheel's files with the CUDA provider slimmed to one architecture
# (tools/slim_cuda_fatbin.py), as a tar.xz split into parts.
#
#   bash tools/pack_onnxruntime_gpu.sh [VERSION] [SM] [PART_MB]    # defaults: 1.31.1 90 52
#
# Writes .ortgpu/part-aa, part-ab, ...; bench/gpu_check.sh unpacks them (from .ortgpu/ and
# from /tmp/ortgpu-parts/, where earlier loads were parked) into /tmp/site.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${1:-1.31.1}; SM=${2:-90}; PART_MB=${3:-52}
work=$(mktemp -d)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 -d "$work" "onnxruntime-gpu==$VERSION"
(cd "$work" && unzip -q ./*.whl && rm ./*.whl)
python3 tools/slim_cuda_fatbin.py "$work/onnxruntime/capi/libonnxruntime_providers_cuda.so" --keep "$SM"
rm -f "$work/onnxruntime/capi/libonnxruntime_providers_tensorrt.so"  # not used: CUDA provider only
rm -rf .ortgpu && mkdir -p .ortgpu
tar -C "$work" -cf - . | xz -T0 -9 | split -b "${PART_MB}M" - .ortgpu/part-
rm -rf "$work"
ls -la .ortgpu
