#!/usr/bin/env bash
# Fills docker/wheels/ (gitignored) with the wheels docker/requirements.lock pins,
# for the image's platform (Linux x86_64, glibc >= 2.17, CPython 3.11), so the
# image can be built offline:
#
#   docker/wheels.sh && docker build --network none ...
#
# The Dockerfile installs from docker/wheels/ with --no-index when it holds
# wheels, and from PyPI otherwise. Idempotent: pip skips wheels already there.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
pip=${PIP:-$repo/.venv/bin/pip}
dest=$repo/docker/wheels
platforms=(manylinux2014_x86_64 manylinux_2_17_x86_64)
for minor in $(seq 18 36); do platforms+=("manylinux_2_${minor}_x86_64"); done
mkdir -p "$dest"
"$pip" download --quiet --disable-pip-version-check \
    --only-binary=:all: --no-deps \
    --implementation cp --python-version 3.11 --abi cp311 \
    "${platforms[@]/#/--platform=}" \
    --dest "$dest" --requirement "$repo/docker/requirements.lock"
echo "docker/wheels: $(find "$dest" -name '*.whl' | wc -l) wheels, $(du -sh "$dest" | cut -f1)"
