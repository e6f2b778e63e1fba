#!/usr/bin/env bash
# Makes a Docker daemon answer here: installs Debian's docker.io (and debootstrap, for the
# local base image) when they are missing, starts dockerd in the background when none answers,
# and waits until it does. Needs root, as on these machines and in CI. Idempotent: a daemon
# that already answers is left alone.
set -euo pipefail

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
  echo "installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if docker info >/dev/null 2>&1; then
  exit 0
fi
log=${DOCKERD_LOG:-/var/log/rerank-dockerd.log}
echo "starting dockerd (log: $log)"
# setsid: the daemon outlives this script and the make that ran it, as a system service would.
setsid -f dockerd >"$log" 2>&1 </dev/null
for _ in $(seq 1 120); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.5
done
echo "dockerd did not answer within 60 s; its log ($log) ends with:" >&2
tail -n 20 "$log" >&2
exit 1
