# Sourced (not run) from the repository root on a GPU machine: makes onnxruntime-gpu and the
# service's packages importable and CUDA's libraries findable, then leaves the shell as it is.
#
#   source bench/gpu_env.sh && python3 -m bench.gpu_check
#
# For a machine without a package index: wheels in .whl/ are installed into /tmp/site, and an
# onnxruntime-gpu packed by tools/pack_onnxruntime_gpu.sh (parts in .ortgpu/ or
# /tmp/ortgpu-parts/) is unpacked there.
site=/tmp/site
mkdir -p "$site"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
fi
parts=$(ls /tmp/ortgpu-parts/part-* .ortgpu/part-* 2>/dev/null | awk -F/ '!seen[$NF]++ {print $NF" "$0}' | sort | cut -d' ' -f2- || true)
if [ -n "$parts" ]; then
  echo "unpacking onnxruntime-gpu from: $(echo $parts)"
  cat $parts | python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer)" \
    | tar -x -C "$site"
fi
export PYTHONPATH=$site:$PWD:${PYTHONPATH:-}
# CUDA/cuDNN from the nvidia-* wheels next to the python (onnxruntime.preload_dlls covers the
# usual layouts; this covers the rest).
nvlibs=$(python3 - <<'PY'
import glob, os, site
dirs = {os.path.dirname(p) for sp in site.getsitepackages()
        for p in glob.glob(os.path.join(sp, "nvidia", "**", "lib*.so*"), recursive=True)}
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH=${nvlibs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
