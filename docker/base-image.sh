#!/usr/bin/env bash
# Builds a local stand-in for `python:3.11-slim` when Docker Hub cannot be reached:
# a Debian bookworm minbase root filesystem (debootstrap) with python3 (3.11),
# python3-venv, python3-pip and ca-certificates, imported as a Docker image.
#
#   docker/base-image.sh [TAG]        # default TAG: diffround-base:bookworm
#
# Needs root, debootstrap and a Debian mirror (DEBIAN_MIRROR, default
# deb.debian.org). The root filesystem tarball is cached in
# $DIFFROUND_CACHE (default: <repo>/.cache/docker, gitignored), so a second call
# only re-imports it. The image is imported into the engine DOCKER_HOST points at.
# Use it with: docker build --build-arg BASE_IMAGE=diffround-base:bookworm .
set -euo pipefail

tag=${1:-diffround-base:bookworm}
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${DIFFROUND_CACHE:-$repo/.cache/docker}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
tarball=$cache/bookworm-python3.tar
docker=${DOCKER:-docker}

if [ "$(id -u)" -ne 0 ]; then
    echo "base-image.sh: debootstrap needs root" >&2
    exit 1
fi

if "$docker" image inspect "$tag" >/dev/null 2>&1; then
    echo "base image $tag present"
    exit 0
fi

mkdir -p "$cache"
if [ ! -s "$tarball" ]; then
    rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$rootfs" "$tarball.tmp"' EXIT
    echo "debootstrap bookworm into $rootfs (about a minute)"
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 || {
        tail -n 30 "$cache/debootstrap.log" >&2
        exit 1
    }
    # Leave the package caches out of the image: they are ~30 MB and never used.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
fi

"$docker" import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    "$tarball" "$tag" >/dev/null
echo "base image $tag imported from $tarball"
