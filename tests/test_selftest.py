"""`virnucpro selftest` on the CPU: passes on this installation, and fails, naming the check, when the packed
path, the classifier loader or the engine itself is broken (each broken on purpose here)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch

from virnucpro.cli import main
from virnucpro.config import EnvConfig
from virnucpro.selftest import run_selftest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIRNUCPRO_SHARED", REPO.parent / "shared"))
CHECKS = ("inputs", "fp32 ESM-2 embeddings", "fp32 DNABERT-S embeddings", "fp32 classifier loader",
          "fp32 classifier calls")


def selftest(tokenizer=None, device="cpu") -> tuple[bool, str]:
    out = io.StringIO()
    passed = run_selftest(device, EnvConfig.from_environ(), tokenizer, stream=out)
    return passed, out.getvalue()


def verdicts(report: str) -> dict[str, str]:
    """check name -> PASS / FAIL, from the report's lines."""
    found = {}
    for line in report.splitlines():
        verdict, _, rest = line.partition("  ")
        if verdict in ("PASS", "FAIL"):
            found[rest.split(":", 1)[0]] = verdict
    return found


def test_passes_on_cpu_and_reports_versions_device_backends():
    passed, report = selftest()
    assert passed, report
    assert verdicts(report) == {name: "PASS" for name in CHECKS}
    assert f"torch {torch.__version__}" in report and "fair-esm 2.0.0" in report
    assert "device: cpu" in report
    assert "[fp32] ESM-2 float32, attention sdpa; DNABERT-S float32, attention sdpa" in report
    assert "proteins of 1..1100 residues" in report
    assert "selftest passed" in report


def test_passes_with_the_real_dnabert_tokenizer():
    folder = SHARED / "models" / "dnabert-s"
    if not (folder / "tokenizer.json").exists():
        pytest.skip("../shared/models/dnabert-s not present")
    passed, report = selftest(folder)
    assert passed, report
    tokens = int(report.split("longest DNA ")[1].split()[0])
    assert tokens > 512


def test_a_wrong_pooling_fails_the_esm_check_only(monkeypatch):
    import virnucpro.engine.scorer as scorer
    from virnucpro.models.dnabert import mean_pool_all_tokens

    monkeypatch.setattr(scorer, "mean_pool_residues", mean_pool_all_tokens)  # BOS/EOS in, no 1024 limit
    passed, report = selftest()
    assert not passed
    assert verdicts(report)["fp32 ESM-2 embeddings"] == "FAIL"
    assert verdicts(report)["fp32 DNABERT-S embeddings"] == "PASS"
    assert "selftest FAILED" in report and "fp32 ESM-2 embeddings" in report.splitlines()[-1]


def test_a_classifier_loader_that_changes_weights_fails(monkeypatch):
    import virnucpro.engine.loading as loading

    real = loading.load_classifier

    def shifted(*args, **kwargs):
        model = real(*args, **kwargs)
        with torch.no_grad():
            model.bn1.running_mean += 0.5
        return model

    monkeypatch.setattr(loading, "load_classifier", shifted)
    passed, report = selftest()
    assert not passed
    assert verdicts(report)["fp32 classifier loader"] == "FAIL"


def test_an_engine_error_is_reported_as_one_line_not_a_traceback(monkeypatch):
    from virnucpro.engine.scorer import Scorer

    def refuse(*args, **kwargs):
        raise RuntimeError("FlashAttention only support fp16 and bf16 data type\nmore detail")

    monkeypatch.setattr(Scorer, "load", refuse)
    passed, report = selftest()
    assert not passed
    assert "FAIL  fp32 load and score: RuntimeError: FlashAttention only support fp16 and bf16 data type" in report
    assert "Traceback" not in report and "more detail" not in report


def test_command_exit_codes(monkeypatch, capsys):
    assert main(["selftest", "--device", "cpu"]) == 0
    assert "selftest passed" in capsys.readouterr().out
    import virnucpro.engine.scorer as scorer

    monkeypatch.setattr(scorer, "mean_pool_residues", lambda hidden, cu: torch.zeros(cu.numel() - 1, hidden.shape[1]))
    assert main(["selftest", "--device", "cpu"]) == 1
    assert "FAIL  fp32 ESM-2 embeddings" in capsys.readouterr().out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_passes_on_cuda_in_the_default_mode_and_fp32():
    """What `apptainer test --nv` and the GPU suite run: predict's default precision mode and the exact fp32."""
    from virnucpro.selftest import precision_modes

    candidates = [SHARED / "models" / "dnabert-s", Path(os.environ.get("VIRNUCPRO_DNABERT_TOKENIZER", "-"))]
    tokenizer = next((folder for folder in candidates if (folder / "tokenizer.json").exists()), None)
    passed, report = selftest(tokenizer, device="cuda")
    print(report)
    modes = precision_modes(torch.device("cuda"))
    assert modes[-1] == "fp32" and len(modes) == 2
    names = [name.replace("fp32", mode) for mode in modes for name in CHECKS[1:]]
    assert verdicts(report) == {name: "PASS" for name in ("inputs", *names)}, report
    assert passed
