"""report.html rendered in a real headless Chromium: its figures' numbers, read back from the rendered DOM, equal
what pandas computes from the run's TSVs (and the telemetry); the page is self-contained."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from finished_run import NanHashScorer, finished_run, write_fasta
from virnucpro import cli
from virnucpro.outputs.report_data import FRACTION_EDGES, LENGTH_EDGES, SCORE_EDGES
from virnucpro.outputs.summary import CALLS
from virnucpro.run import aggregate
from virnucpro.run.rundir import PREDICTIONS, REPORT, SUMMARY
from virnucpro.run.telemetry import read_events

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def _install_chromium() -> str | None:
    """Debian's chromium, installed with apt-get when missing (CI runs as root); None when that is not possible."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        if subprocess.run(command, env=environment, capture_output=True, timeout=900).returncode != 0:
            return None
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def chromium() -> str:
    found = _install_chromium()
    if not found:
        pytest.skip("no chromium and `apt-get install chromium` was not possible (not root, or apt failed)")
    return found


def render(chromium: str, page: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
                          capture_output=True, text=True, timeout=180)


class Figures(HTMLParser):
    """From the rendered DOM: every mark with data-value, by figure id; the JSON data block; external references."""

    def __init__(self):
        super().__init__()
        self.figure = None
        self.marks: dict[str, list[dict]] = {}
        self.external: list[str] = []
        self.in_data = False
        self.data_text = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "svg":
            self.figure = attrs.get("id")
            self.marks.setdefault(self.figure, [])
        if "data-value" in attrs:
            self.marks[self.figure].append(attrs)
        for name in ("src", "href"):
            if attrs.get(name):
                self.external.append(attrs[name])
        if tag == "link" or (tag == "script" and attrs.get("type") != "application/json"):
            self.external.append(f"<{tag}>")
        self.in_data = tag == "script" and attrs.get("id") == "report-data"

    def handle_endtag(self, tag):
        if tag == "svg":
            self.figure = None
        if tag == "script":
            self.in_data = False

    def handle_data(self, data):
        if self.in_data:
            self.data_text += data


def values(marks: list[dict], series: str = "bars") -> list[int]:
    return [int(float(m["data-value"])) for m in marks if m.get("data-series") == series]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, golden_prep) -> Path:
    rundir = finished_run(tmp_path_factory.mktemp("report"), golden_prep / "input.fasta", chunk_length=300,
                          scorer=NanHashScorer())
    aggregate(rundir)
    return rundir


def check_figures_against_the_tsvs(parsed: Figures, rundir: Path) -> None:
    frames = pd.read_csv(rundir / PREDICTIONS, sep="\t")
    score2 = frames["score2"].to_numpy().astype(np.float32).astype(np.float64)  # the stored float32 values
    assert values(parsed.marks["figure-score2"]) == np.histogram(score2, SCORE_EDGES)[0].tolist()
    summary = pd.read_csv(rundir / SUMMARY, sep="\t", keep_default_na=False)
    scored = summary[summary["scored_chunks"] > 0]
    fractions = (scored["viral_chunks"] / scored["scored_chunks"]).to_numpy()
    assert values(parsed.marks["figure-viral-fraction"]) == np.histogram(fractions, FRACTION_EDGES)[0].tolist()
    bins = pd.cut(summary["length"], LENGTH_EDGES, right=False, labels=False)
    for call in CALLS:
        expected = np.bincount(bins[summary["call"] == call], minlength=len(LENGTH_EDGES) - 1).tolist()
        assert values(parsed.marks["figure-length-call"], call) == expected, call
    parts = [e for e in read_events(rundir / "telemetry.jsonl") if e.get("event") == "part"]
    data = json.loads(parsed.data_text)
    speed = data["throughput"]
    assert speed["frames"] == sum(e["frames"] for e in parts)
    plotted = [float(m["data-value"]) for m in parsed.marks["figure-throughput"]]
    assert plotted == speed["frames_per_s"]
    assert sum(plotted) * speed["bin_seconds"] == pytest.approx(speed["frames"], rel=1e-3)
    assert data["counts"]["sequences"] == len(summary) and data["counts"]["frames"] == sum(e["frames"] for e in parts)


def test_report_renders_in_chromium_and_its_numbers_equal_the_tsvs(chromium, finished, tmp_path):
    page = finished / REPORT
    dom = render(chromium, page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    parsed = Figures()
    parsed.feed(dom.stdout)
    assert set(parsed.marks) >= {"figure-score2", "figure-viral-fraction", "figure-length-call", "figure-throughput"}
    check_figures_against_the_tsvs(parsed, finished)
    assert parsed.external == []  # nothing fetched: no src, href, stylesheet link or script
    data = json.loads(parsed.data_text)
    manifest = json.loads((finished / "manifest.json").read_text())
    assert manifest["identity"]["input"]["sha256"] in data["provenance"]["input"]
    assert data["provenance"]["precision"] == manifest["identity"]["precision"]
    assert {"esm", "dnabert", "classifier"} <= set(data["provenance"]["models"])
    assert "virnucpro (this report)" in data["provenance"]["versions"]
    assert data["settings"]["min_score"] is None and data["settings"]["consensus_format"] == "published"
    warnings = " ".join(data["warnings"])
    assert "shorter than the chunk length (300 bp)" in warnings and "not finite" in warnings
    shot = tmp_path / "report.png"
    picture = render(chromium, page, tmp_path, f"--screenshot={shot}", "--window-size=1400,1800")
    assert picture.returncode == 0 and shot.stat().st_size > 20_000, picture.stderr


def test_report_command_rebuilds_the_same_numbers_after_a_call(chromium, finished, tmp_path):
    rundir = tmp_path / "run"
    shutil.copytree(finished, rundir)
    assert cli.main(["call", str(rundir), "--min-score", "0.8", "--min-chunks", "2"]) == 0
    after_call = json.loads(_data_block((rundir / REPORT).read_text()))
    (rundir / REPORT).unlink()
    assert cli.main(["report", str(rundir)]) == 0
    dom = render(chromium, rundir / REPORT, tmp_path, "--dump-dom")
    parsed = Figures()
    parsed.feed(dom.stdout)
    check_figures_against_the_tsvs(parsed, rundir)
    rebuilt = json.loads(parsed.data_text)
    assert rebuilt["figures"] == after_call["figures"] and rebuilt["counts"] == after_call["counts"]
    assert rebuilt["settings"]["min_score"] == 0.8 and rebuilt["settings"]["min_chunks"] == 2
    assert rebuilt["warnings"] == after_call["warnings"]


def _data_block(html: str) -> str:
    start = html.index('id="report-data">') + len('id="report-data">')
    return html[start:html.index("</script>", start)].replace("<\\/", "</")


def test_short_read_runs_are_flagged(tmp_path):
    reads = [(f"read{i}", "CGGCTA" * 25) for i in range(30)]  # 150 bp reads
    rundir = finished_run(tmp_path, write_fasta(tmp_path / "reads.fasta", reads), chunk_length=300)
    aggregate(rundir)
    data = json.loads(_data_block((rundir / REPORT).read_text()))
    assert any("median sequence length is 150 bp (< 300 bp)" in w and "near chance" in w for w in data["warnings"])
    assert any("30 of 30 sequences are shorter than the chunk length" in w for w in data["warnings"])


def test_report_of_an_unfinished_run_is_refused(tmp_path, golden_prep, capsys):
    rundir = finished_run(tmp_path, golden_prep / "input.fasta")
    assert cli.main(["report", str(rundir)]) == 4
    assert "not complete" in capsys.readouterr().err
