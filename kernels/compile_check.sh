#!/usr/bin/env bash
# Compile every kernels/*.cu to PTX with nvcc, so that no kernel is silently broken.
# Each .cu file must compile on its own (type defines have defaults; CuPy prepends
# its own #define preamble at run time). Skips with a message when nvcc is absent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
shopt -s nullglob
files=("$here"/*.cu)
if [ ${#files[@]} -eq 0 ]; then
    echo "kernels: no .cu files"
    exit 0
fi
NVCC="${NVCC:-$(command -v nvcc || true)}"
if [ -z "$NVCC" ]; then
    for c in /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc; do [ -x "$c" ] && NVCC="$c" && break; done
fi
if [ -z "$NVCC" ]; then
    echo "kernels: nvcc not found; kernel compile check skipped" >&2
    exit 0
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
fail=0
for f in "${files[@]}"; do
    for arch in sm_80 sm_90; do
        if "$NVCC" --std=c++14 -arch="$arch" -ptx -o "$out/$(basename "$f" .cu).$arch.ptx" "$f"; then
            :
        else
            echo "kernels: FAILED to compile $(basename "$f") for $arch" >&2
            fail=1
        fi
    done
    echo "kernels: $(basename "$f") compiles (sm_80, sm_90)"
done
exit $fail
