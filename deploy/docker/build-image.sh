#!/usr/bin/env bash
# Builds rerank's container image without a package index or a registry (what `make image` runs).
#
#   deploy/docker/build-image.sh [serve|convert]
#
# 1. the wheelhouse, on the host: every dependency `pip wheel`ed against requirements/dev.lock
#    into build/image/wheels/ (again only when the lock or pyproject.toml changed), rerank's own
#    wheel into build/image/rerank/ (every time; a fixed SOURCE_DATE_EPOCH makes an unchanged
#    source give the same bytes, so Docker's layer cache holds);
# 2. the base image: $BASE_IMAGE if given (it must exist or be pullable); otherwise the official
#    python:3.11-slim-bookworm, pulled if missing, and where it cannot be pulled a local Debian
#    made by deploy/docker/debian-base.sh;
# 3. `docker build` of deploy/docker/Dockerfile with build/image/ as the context.
#
# Environment: IMAGE (default rerank:dev; rerank-convert:dev for the convert target),
# BASE_IMAGE, ONNXRUNTIME (another ONNX Runtime distribution in place of the locked
# `onnxruntime`, e.g. 'onnxruntime-gpu[cuda,cudnn]==1.31.1' for the CUDA variant: see
# docs/deploying.md), PYTHON (default .venv/bin/python), DOCKER (the client that builds).
set -euo pipefail
cd "$(dirname "$0")/../.."

target=${1:-serve}
case $target in
  serve) image=${IMAGE:-rerank:dev} ;;
  convert) image=${IMAGE:-rerank-convert:dev} ;;
  *) echo "usage: $0 [serve|convert]" >&2; exit 2 ;;
esac
python=${PYTHON:-.venv/bin/python}
lock=requirements/dev.lock
onnxruntime=${ONNXRUNTIME:-}
# A variant's wheels live apart, so switching does not re-make the default's.
context=build/image${onnxruntime:+-variant}
default_base=python:3.11-slim-bookworm
local_base=rerank-local/python:3.11-bookworm
# BuildKit (it builds only the stages the target needs) comes with Debian's docker.io client.
docker_build=${DOCKER:-$( [[ -x /usr/bin/docker ]] && echo /usr/bin/docker || echo docker )}

seconds() { echo $(( $(date +%s) - $1 )); }
# Runs a command quietly; on failure shows what it printed.
quiet() {
  local out
  if ! out=$("$@" 2>&1); then
    echo "$out" >&2
    return 1
  fi
}

# ------------------------------------------------------------------ 1. the wheelhouse
started=$(date +%s)
mkdir -p "$context"
rm -rf "$context/rerank"
SOURCE_DATE_EPOCH=315532800 quiet "$python" -m pip wheel --no-deps -w "$context/rerank" .
wheel=$(ls "$context"/rerank/rerank-*.whl)

# Only wheels pip needs: the service's dependencies (and Envoy's wheel), or the converter's.
wheelhouse() {  # wheelhouse DIR EXTRA
  local dir=$1 extra=$2 key
  key=$(cat pyproject.toml "$lock" | sha256sum | cut -d' ' -f1)-$extra-$onnxruntime
  if [[ -f $dir/.key && $(cat "$dir/.key") == "$key" ]]; then
    return
  fi
  rm -rf "$dir" && mkdir -p "$dir"
  quiet "$python" -m pip wheel -c "$lock" -w "$dir" "$wheel[$extra]"
  rm -f "$dir"/rerank-*.whl  # rerank itself has its own layer
  if [[ -n $onnxruntime && $extra != convert* ]]; then
    rm -f "$dir"/onnxruntime-[0-9]*.whl
    quiet "$python" -m pip wheel -c "$lock" -w "$dir" "$onnxruntime"
  fi
  echo "$key" >"$dir/.key"
}
# tracing: RERANK_OTLP_ENDPOINT works in the image; openvino: the CPU backend (bf16 / int8 on AMX,
# AVX-512 BF16, VNNI; f32 faster than ORT here).
wheelhouse "$context/wheels" gateway,tracing,openvino
mkdir -p "$context/convert"
if [[ $target == convert ]]; then
  wheelhouse "$context/convert" convert,openvino  # to gate the OpenVINO variants
  # What build/image/wheels already has need not be copied twice.
  for w in "$context"/wheels/*.whl; do rm -f "$context/convert/$(basename "$w")"; done
fi
echo "wheelhouse: $(du -sh "$context" | cut -f1) in $(seconds "$started") s"

# -------------------------------------------------------------------- 2. the base image
started=$(date +%s)
base=${BASE_IMAGE:-}
if [[ -n $base ]]; then
  docker image inspect "$base" >/dev/null 2>&1 || docker pull "$base"
elif docker image inspect "$default_base" >/dev/null 2>&1 || docker pull -q "$default_base" >/dev/null 2>&1; then
  base=$default_base
else
  echo "$default_base cannot be pulled here: using the local Debian base $local_base"
  deploy/docker/debian-base.sh "$local_base"
  base=$local_base
fi
echo "base image: $base ($(seconds "$started") s)"

# ------------------------------------------------------------------------- 3. the image
started=$(date +%s)
previous=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
DOCKER_BUILDKIT=1 "$docker_build" build --progress=plain \
  -f deploy/docker/Dockerfile --target "$target" --build-arg "BASE_IMAGE=$base" -t "$image" "$context" \
  >"$context/build.log" 2>&1 || {
  tail -n 40 "$context/build.log" >&2
  echo "docker build failed; the whole log is in $context/build.log" >&2
  exit 1
}
# The image this build replaced, now untagged, would keep its ~350 MB layer: remove it (Docker
# refuses while a container uses it or another tag names it, which is fine).
if [[ -n $previous && $previous != $(docker image inspect -f '{{.Id}}' "$image") ]]; then
  docker rmi "$previous" >/dev/null 2>&1 || true
fi
size=$(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}')
echo "built $image from $base: $size, in $(seconds "$started") s"
