#!/usr/bin/env bash
# A local base image for the Dockerfile where no container registry is reachable: Debian
# bookworm (minbase) with Debian's python3 (3.11, the ABI of the host's cp311 wheels) and venv,
# built with debootstrap from this machine's apt mirror and loaded with `docker import`.
#
#   deploy/docker/debian-base.sh [IMAGE]     (default rerank-local/python:3.11-bookworm)
#
# An image that already exists is kept: importing again would make a new image id and throw
# away every layer built on top of it. `docker rmi IMAGE` forces a rebuild.
set -euo pipefail

image=${1:-rerank-local/python:3.11-bookworm}
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "base image $image exists"
  exit 0
fi

# The mirror apt uses here (deb822 or one-line sources), else Debian's own.
mirror=${DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
  mirror=$(grep -hsoE '^URIs: *https?://[^ ]+/debian/?$' /etc/apt/sources.list.d/*.sources | head -n1 | sed 's/^URIs: *//') || true
fi
if [[ -z $mirror ]]; then
  mirror=$(grep -hsoE '^deb +https?://[^ ]+/debian/? ' /etc/apt/sources.list | head -n1 | awk '{print $2}') || true
fi
mirror=${mirror:-http://deb.debian.org/debian}

rootfs=$(mktemp -d /tmp/rerank-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap bookworm from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
  tail -n 30 "$rootfs.log" >&2
  exit 1
}
rm -f "$rootfs.log"
# What an image does not need: package caches and lists, documentation.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$image" >/dev/null
echo "imported $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
