"""Each `--precision` mode of the whole engine against the plain fp32 reference, frame by frame (issue 11).

Real shapes (ESM-2 3B, DNABERT-S), random weights, ~1,500 held-out frames of 500 bp and 150 bp reads; five
classifiers calibrated to call half of the frames viral (the harshest case; see virnucpro/bench/fidelity.py). The
oracle is fair-esm's own fp32 forward and the eager fp32 DNABERT-S reference. Measured on an H200
(docs/benchmarks.md, "Numerics"): fp16 99.84%, accurate 99.95-99.97%, fp32 99.97-100%, bf16 98.76% on this set
(`accurate` rechecks frames per classifier: the engine runs once per classifier for it).
Each mode must keep its promise, and no call may change unless the frame sits within a tenth of the median margin
of the decision boundary. The second engine pass of each mode is timed (whole engine: both models, pooling,
classifier), so the report carries each mode's speed beside its agreement.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
# Mean agreement over classifiers, a tie (a reference margin below fidelity.TIE_MARGIN, within the fp32 engine's
# own reproducibility) counting as agreeing: `accurate` and `fp32` flipped 2-4 such frames per run, each on a
# reference margin under 5e-6 (H200, docs/benchmarks.md); the raw agreement is reported beside it.
PROMISES = {"fp16": 0.998, "accurate": 0.9995, "fp32": 0.9995, "bf16": 0.985}
# A flipped call's reference margin, as a fraction of the median |virus - others| logit margin: within a tenth for
# fp16 and better; bf16's coarser rounding reached 0.14 on this set (H200, docs/benchmarks.md).
NEAR_BOUNDARY = {"fp16": 0.1, "accurate": 0.1, "fp32": 0.1, "bf16": 0.2}


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    from virnucpro.bench import fidelity
    from virnucpro.bench.models import random_dnabert, random_fairesm
    from virnucpro.bench.workloads import ESM_SHAPES

    source = fidelity.fidelity_frames(tmp_path_factory.mktemp("fidelity"), read_sets=((600, 500), (600, 150)))
    frames = source.read(0, len(source))
    device = torch.device("cuda")
    torch.manual_seed(0)
    fair, _ = random_fairesm(ESM_SHAPES["3B"], device)
    _, folder = random_dnabert(device, torch.float32, os.environ.get("VIRNUCPRO_DNABERT_TOKENIZER"), fuse=False)
    reference = fidelity.reference_features(fair, folder, frames, device)
    classifiers = [fidelity.calibrated_classifier(reference, seed) for seed in fidelity.CLASSIFIER_SEEDS]
    return {"source": source, "fair": fair, "folder": folder, "reference": reference, "classifiers": classifiers,
            "device": device, "tokens": int(source.aa_lengths.sum()) + 2 * len(source), "report": {}}


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("mode", list(PROMISES))
def test_precision_mode_keeps_its_promise(oracle, mode):
    from virnucpro.bench import fidelity
    from virnucpro.config import EnvConfig
    from virnucpro.models.precision import PRECISION_MODES

    models = fidelity.build_models(PRECISION_MODES[mode], oracle["fair"], oracle["folder"], oracle["classifiers"][0],
                                   oracle["device"])
    env = EnvConfig.from_environ({})
    fidelity.engine_features(models, oracle["source"], env, stop=512)  # compiles, allocates
    started = time.perf_counter()
    features, stats = fidelity.engine_pass(models, oracle["source"], env)
    seconds = time.perf_counter() - started
    per_classifier = fidelity.features_per_classifier(models, oracle["source"], env, oracle["classifiers"], features)
    agreement = fidelity.compare(oracle["reference"], per_classifier, oracle["classifiers"])
    report = {**agreement.as_dict(), "engine_esm_tokens_per_s": oracle["tokens"] / seconds,
              "rechecked_frames": stats.rechecked_frames}
    _save(oracle["report"], mode, report)
    assert agreement.agreement_beyond_ties >= PROMISES[mode], report
    assert all(abs(m) < NEAR_BOUNDARY[mode] * agreement.margin_abs_median
               for m in agreement.flipped_reference_margins), report
    del models
    torch.cuda.empty_cache()


def _save(reports: dict, mode: str, report: dict) -> None:
    reports[mode] = report
    print(json.dumps({mode: {k: v for k, v in report.items() if k != "flipped_reference_margins"}}))
    if folder := os.environ.get("VIRNUCPRO_GPU_REPORT"):
        Path(folder, "fidelity.json").write_text(json.dumps(reports, indent=1))
