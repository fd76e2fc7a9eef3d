#!/usr/bin/env bash
# Download the wheels that perf/gpu-check needs on a GPU machine without a package index
# (Python 3.12, manylinux x86_64) into .whl/ (gitignored; never commit wheels).
#
#   bash perf/fetch-wheels.sh [DIR]          # default DIR=.whl
#
# The GPU machine image already has numpy, scipy, numba, cupy, mpi4py, pyyaml and pytest;
# gpuspec additionally needs fitsio, astropy (+ pyerfa, astropy-iers-data), healpy and,
# for named NVTX ranges, nvtx. Versions are the ones the CPU development machine uses.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
mkdir -p "$DIR"
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
      --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64)
PKGS=(fitsio==1.4.2 astropy==8.0.2 pyerfa==2.0.1.5 "astropy-iers-data" healpy==1.20.1
      "nvtx>=0.2")
for p in "${PKGS[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp "${PLAT[@]}" -d "$DIR" "$p"
done
ls -l "$DIR"
