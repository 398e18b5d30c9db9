"""A shard keeps the numerics that scored its parts; a resume under other numerics is warned about (issue 13.3)."""

from __future__ import annotations

import json

from virnucpro.run.numerics import NUMERICS_FILE, record_numerics

A = {"precision": {"mode": "fp16"}, "torch": "2.11.0", "device": "NVIDIA H200", "token_budgets": [32768, 65536]}


def test_first_start_records_and_reports_nothing(tmp_path):
    assert record_numerics(tmp_path, A, has_parts=False) == []
    assert json.loads((tmp_path / NUMERICS_FILE).read_text()) == A


def test_a_resume_on_another_gpu_is_reported_with_what_changed(tmp_path, caplog):
    record_numerics(tmp_path, A, has_parts=False)
    other = {**A, "device": "NVIDIA A100-SXM4-80GB", "torch": "2.10.0"}
    assert record_numerics(tmp_path, other, has_parts=True) == ["device", "torch"]
    assert "resumed with other numerics (device, torch)" in caplog.text
    assert json.loads((tmp_path / NUMERICS_FILE).read_text()) == other


def test_same_numerics_or_no_parts_yet_is_quiet(tmp_path):
    record_numerics(tmp_path, A, has_parts=False)
    assert record_numerics(tmp_path, dict(A), has_parts=True) == []
    assert record_numerics(tmp_path, {**A, "torch": "2.12"}, has_parts=False) == []
    assert record_numerics(tmp_path, None, has_parts=True) == []
