#!/bin/sh
# Cancel the CI cluster's jobs and stop its daemons (by their pid files in DIR).
set -eu
DIR=${1:?usage: slurm/ci/stop.sh DIR}
cd "$(dirname "$0")/../.."
exec "${PYTHON:-python3}" tests/slurm_cluster.py stop "$DIR"
