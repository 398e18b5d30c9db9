#!/usr/bin/env bash
# Every GPU test and benchmark in one go, for a lent GPU (few, full calls). Results go under $OUT.
#   before: bash scripts/gpu_wheels.sh (makes .whl/site-cp312.tar.xz from requirements.lock)
#   carry: .whl (the lock's packages but torch, triton, nvidia-*, cuda-*, which the GPU machine has) and .gpu
#          (the real DNABERT-S tokenizer, no weights)
#   usage: bash scripts/gpu_suite.sh [tests|selftest|fidelity|bench|esm|load|scaling|dedup|startup|epilogues|attention|all]
#          [extra args]
#     tests: the installed versions against the lock, `virnucpro selftest --device cuda`, pytest -m gpu;
#     selftest: the first two only; fidelity: the fidelity test of every --precision mode (extra args go to
#     pytest, e.g. -k accurate); bench: every peer, DNABERT-S, whole predict; esm: ESM-2 3B alone, ours against
#     transformers and the shape-GEMM ceiling; load: 3B .pt vs .safetensors
#     load time; scaling: whole predict on 1, 2, 4 GPUs of this node (those visible); dedup: whole predict with and
#     without de-duplication on 30% duplicate 150 bp reads, each in its own process, both after a warm-up run;
#     startup: array-task start-up (scripts/startup_ab.py [--sample FOLDER]; STARTUP_VARIANTS=folder,... compares
#     other package folders in the same call); epilogues: ESM-2's GEMM-epilogue kernels, candidate tiles against
#     cuBLAS and both elementwise paths on the whole 3B model (scripts/epilogue_probe.py); attention: the region before
#     attention both ways, the rotary attention kernel's tiles, the three paths on the whole 3B model and a kernel
#     profile of the default (scripts/attention_probe.py), and the fused-path GPU tests of ESM-2
# Every mode first compares the installed versions with requirements.lock (versions.txt) and stops with exit 3
# on any difference, torch included: results count only on the locked stack. ALLOW_LOCK_MISMATCH=1 runs anyway.
set -uo pipefail
what=${1:-all}; shift || true
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
if [[ -f .whl/site-cp312.tar.xz ]]; then
  rm -rf /tmp/site && mkdir -p /tmp/site && tar -xJf .whl/site-cp312.tar.xz -C /tmp/site
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# What this machine's Python had for bytecode (run 8's profile: every process compiled torch, sympy, ... from
# source, ~2.5 s and ~3.6 s of reads in a task's start-up). pip compiles it when it installs (make install, the
# image), so a bytecode cache of our own puts start-up figures on an installed stack's footing.
{ env | grep '^PYTHON' | grep -v '^PYTHONPATH'; python3 -c "import pathlib, torch; print('torch bytecode files:', \
  len(list(pathlib.Path(torch.__file__).parent.glob('__pycache__/*.pyc'))))"; } > "$OUT/python-bytecode.txt" 2>&1
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=${TMPDIR:-/tmp}/virnucpro-pycache
export VIRNUCPRO_DNABERT_TOKENIZER=${VIRNUCPRO_DNABERT_TOKENIZER:-$PWD/.gpu/dnabert-s} VIRNUCPRO_GPU_REPORT=$OUT
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
if ! python3 containers/pins.py check requirements.lock all 2>&1 | tee "$OUT/versions.txt"; then
  echo "gpu_suite: the installed packages differ from requirements.lock (see $OUT/versions.txt)" >&2
  [[ ${ALLOW_LOCK_MISMATCH:-0} == 1 ]] || exit 3
  echo "gpu_suite: ALLOW_LOCK_MISMATCH=1: going on; these results are NOT on the locked stack" >&2
fi
tokenizer=()
[[ -f $VIRNUCPRO_DNABERT_TOKENIZER/tokenizer.json ]] && tokenizer=(--dnabert-tokenizer "$VIRNUCPRO_DNABERT_TOKENIZER")
status=0
if [[ $what == tests || $what == selftest || $what == all ]]; then
  python3 -m virnucpro selftest --device cuda "${tokenizer[@]}" 2>&1 | tee "$OUT/selftest.log"
  (( PIPESTATUS[0] == 0 )) || status=1
fi
if [[ $what == tests || $what == all ]]; then
  python3 -m pytest -q -rP -m gpu -p no:cacheprovider tests 2>&1 | tee "$OUT/gpu-tests.log"
  (( PIPESTATUS[0] == 0 )) || status=1
fi
if [[ $what == fidelity ]]; then
  python3 -m pytest -q -rP -m gpu -p no:cacheprovider tests/test_fidelity_gpu.py "$@" 2>&1 | tee "$OUT/fidelity-tests.log"
  (( PIPESTATUS[0] == 0 )) || status=1
fi
if [[ $what == bench || $what == all ]]; then
  python3 -m virnucpro bench --dnabert --dnabert-tokenizer "$VIRNUCPRO_DNABERT_TOKENIZER" --pipeline \
    --json "$OUT/bench.json" "$@" 2>&1 | tee "$OUT/bench.log"
  (( PIPESTATUS[0] == 0 )) || status=1
fi
if [[ $what == esm ]]; then
  python3 -m virnucpro bench --esm 3B --workloads chunks500,reads150 --peers ours,hf-sdpa-bf16 --sequences 6144 \
    --peer-sequences 1024 --json "$OUT/bench-esm.json" "$@" 2>&1 | tee "$OUT/bench-esm.log"
  (( PIPESTATUS[0] == 0 )) || status=1
fi
if [[ $what == load || $what == all ]]; then
  python3 scripts/time_model_load.py --random-3b --repeats 2 --scratch "${TMPDIR:-/tmp}" 2>&1 | tee "$OUT/model-load.jsonl"
fi
if [[ $what == scaling ]]; then
  python3 -m virnucpro bench --esm "" --dnabert-tokenizer "$VIRNUCPRO_DNABERT_TOKENIZER" --scaling 1,2,4 \
    --json "$OUT/scaling.json" "$@" 2>&1 | tee "$OUT/scaling.log"
fi
if [[ $what == dedup ]]; then
  python3 scripts/dedup_measure.py --device cuda --tokenizer "$VIRNUCPRO_DNABERT_TOKENIZER" --reads 60000 --length 150 \
    --duplicates 0.3 --warm --work "${TMPDIR:-/tmp}/virnucpro-dedup" 2>"$OUT/dedup.err" | tee "$OUT/dedup.jsonl"
  (( PIPESTATUS[0] == 0 )) || status=1
fi
if [[ $what == startup ]]; then
  python3 scripts/startup_ab.py --variants "${STARTUP_VARIANTS:-.}" --tokenizer "$VIRNUCPRO_DNABERT_TOKENIZER" \
    --json "$OUT/startup.json" "$@" 2>"$OUT/startup.err" | tee "$OUT/startup.jsonl"
  (( PIPESTATUS[0] == 0 )) || status=1
fi
if [[ $what == epilogues ]]; then
  python3 scripts/epilogue_probe.py --tiles --model --json "$OUT/epilogue-probe.jsonl" "$@" 2>"$OUT/epilogue-probe.err"
  (( $? == 0 )) || status=1
fi
if [[ $what == attention ]]; then
  python3 scripts/attention_probe.py --tiles --model --profile "$OUT/profile" --json "$OUT/attention-probe.jsonl" "$@" \
    2>"$OUT/attention-probe.err"
  (( $? == 0 )) || status=1
  python3 -m pytest -q -rP -m gpu -p no:cacheprovider tests/test_esm2.py -k fused_paths 2>&1 | tee "$OUT/esm-fused-tests.log"
  (( PIPESTATUS[0] == 0 )) || status=1
fi
exit $status
