#!/bin/bash
# gpuspec-run with a generic mpiexec (MPICH, Open MPI) on one machine.
#
#   bash launch/mpiexec-example.sh manifest.yaml [NRANKS]
#
# NRANKS defaults to the number of visible GPUs (nvidia-smi -L), or 2 without GPU.
# Rank r binds GPU (node-local rank r) % (number of visible GPUs). Rank 0 also
# schedules: ranks ask it for the next ready task whenever they are free.
# Without MPI at all, just run:  gpuspec-run manifest.yaml
set -euo pipefail
MANIFEST=${1:?usage: mpiexec-example.sh manifest.yaml [NRANKS]}
if [[ $# -ge 2 ]]; then
    N=$2
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    N=$(nvidia-smi -L | wc -l)
else
    N=2
fi
PROD=$(python -c "import sys; from gpuspec.launch.manifest import load_manifest; print(load_manifest(sys.argv[1]).production)" "$MANIFEST")
gpuspec-run "$MANIFEST" --check
echo "running $MANIFEST on $N ranks; follow with: gpuspec status $PROD"
set +e
mpiexec -n "$N" python -m gpuspec.launch.cli "$MANIFEST"
rc=$?
set -e
gpuspec status "$PROD" --once
if [[ $rc -ne 0 ]]; then
    echo "some tasks failed:"; gpuspec tasks "$PROD" --state failed
fi
exit $rc
