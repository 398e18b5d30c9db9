#!/usr/bin/env bash
# Every GPU test and benchmark in one go, for a lent GPU (few, full calls). Results go under $OUT.
#   carry: .whl (fair-esm, biopython, submitit wheels) and .gpu (real DNABERT-S tokenizer, no weights)
#   usage: bash scripts/gpu_suite.sh [tests|bench|load|scaling|all] [extra bench args...]
#     tests: pytest -m gpu; bench: every peer, DNABERT-S, whole predict; load: 3B .pt vs .safetensors load time;
#     scaling: whole predict on 1, 2, 4 GPUs of this node (those visible)
set -uo pipefail
what=${1:-all}; shift || true
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export VIRNUCPRO_DNABERT_TOKENIZER=${VIRNUCPRO_DNABERT_TOKENIZER:-$PWD/.gpu/dnabert-s} VIRNUCPRO_GPU_REPORT=$OUT
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$OUT/gpu.txt" 2>&1
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
status=0
if [[ $what == tests || $what == all ]]; then
  python3 -m pytest -q -rP -m gpu -p no:cacheprovider tests 2>&1 | tee "$OUT/gpu-tests.log"
  status=${PIPESTATUS[0]}
fi
if [[ $what == bench || $what == all ]]; then
  python3 -m virnucpro bench --dnabert --dnabert-tokenizer "$VIRNUCPRO_DNABERT_TOKENIZER" --pipeline \
    --json "$OUT/bench.json" "$@" 2>&1 | tee "$OUT/bench.log"
fi
if [[ $what == load || $what == all ]]; then
  python3 scripts/time_model_load.py --random-3b --repeats 2 --scratch "${TMPDIR:-/tmp}" 2>&1 | tee "$OUT/model-load.jsonl"
fi
if [[ $what == scaling ]]; then
  python3 -m virnucpro bench --esm "" --dnabert-tokenizer "$VIRNUCPRO_DNABERT_TOKENIZER" --scaling 1,2,4 \
    --json "$OUT/scaling.json" "$@" 2>&1 | tee "$OUT/scaling.log"
fi
exit $status
