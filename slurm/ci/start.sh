#!/bin/sh
# Start a one-node SLURM for CI in DIR (installs slurm-wlm + munge with apt-get when missing; needs root).
# Prints the `export SLURM_CONF=...` line to use it.  Stop it with slurm/ci/stop.sh DIR.
set -eu
DIR=${1:?usage: slurm/ci/start.sh DIR}
cd "$(dirname "$0")/../.."
exec "${PYTHON:-python3}" tests/slurm_cluster.py start "$DIR"
