#!/usr/bin/env bash
# The lock's packages for the lent GPU machine (CPython 3.12, manylinux x86_64), for scripts/gpu_suite.sh:
# downloads their wheels hash-checked against requirements.lock, installs them into a folder for CPython 3.12
# (pip --target, no code run) and packs that folder as .whl/site-cp312.tar.xz; carry .whl.
# torch, triton and the CUDA libraries (nvidia-*, cuda-toolkit), which torch pins exactly, are left out: the GPU
# machine has them preinstalled (torch 2.11.0+cu130) and they are several GB; gpu_suite.sh fails if their versions
# differ from the lock. cuda-bindings and cuda-pathfinder, which torch takes by range, are carried.
# Why a .tar.xz of the installed folder rather than the wheels: the wheels are over 64 MB (numpy 17, transformers 14),
# over what the device tool carries (64 MiB with the working tree); xz of the unpacked files is 48 MiB (pandas, for
# the tests' oracles, included).
# Needs PyPI; takes about 3 minutes (xz on 2 cores).   usage: bash scripts/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT_MB=${LIMIT_MB:-56}  # 64 MiB carried in all: the working tree is ~2 MiB, .gpu 0.2 MiB
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# pip does not widen a manylinux tag to the older glibc ones it implies: list them (torch itself needs 2.28).
platforms=(manylinux2014_x86_64 manylinux2010_x86_64 manylinux1_x86_64)
for glibc_minor in $(seq 28 -1 5); do platforms+=("manylinux_2_${glibc_minor}_x86_64"); done
target=(--only-binary :all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
        "${platforms[@]/#/--platform=}")
python3 containers/pins.py requirements requirements.lock all --exclude torch triton 'nvidia-*' cuda-toolkit \
  > "$work/requirements.txt"
python3 -m pip download --quiet --require-hashes --no-deps --dest "$work/wheels" "${target[@]}" \
  -r "$work/requirements.txt"
python3 -m pip install --quiet --no-deps --no-compile --no-index --target "$work/site" "${target[@]}" \
  "$work"/wheels/*.whl
rm -rf "$work/site/bin"  # console scripts with this machine's interpreter path; the suite runs modules
rm -rf .whl && mkdir -p .whl
tar -C "$work/site" -cf - . | xz -9 -T2 > .whl/site-cp312.tar.xz
size_mb=$(( $(stat -c %s .whl/site-cp312.tar.xz) / 1048576 ))
echo "gpu_wheels: $(ls "$work/wheels" | wc -l) packages of requirements.lock in .whl/site-cp312.tar.xz," \
     "${size_mb} MiB (limit ${LIMIT_MB} MiB)"
if (( size_mb > LIMIT_MB )); then
  echo "gpu_wheels: .whl/site-cp312.tar.xz is over ${LIMIT_MB} MiB: too large to carry" >&2
  exit 1
fi
