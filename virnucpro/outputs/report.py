"""report.html: one self-contained page to look at a run (inline SVG, inline CSS, no script, nothing fetched).

Figures: score2 of every frame, the viral fraction of every scored sequence, sequence length against call,
throughput over the run; then warnings (short inputs, non-finite scores), the thresholds and the provenance.
Every number drawn is also in a JSON block (`<script type="application/json" id="report-data">`, never executed)
and on its SVG element, so tests and scripts can read them back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html import escape

from virnucpro.outputs.report_data import ReportFigures
from virnucpro.outputs.svg import bar_chart, line_chart, stacked_bar_chart

DATA_ID = "report-data"
STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1420px;
color:#222;padding:0 16px}h1{font-size:22px}h2{font-size:17px;margin-top:28px}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}.figures{display:flex;flex-wrap:wrap;gap:12px}
.figure{border:1px solid #ddd;background:#fff}.title{font-size:14px;font-weight:600}.axis{font-size:12px}
.tick{font-size:10px;fill:#444}.warning{background:#fff4e5;border-left:4px solid #f39c12;padding:6px 10px;margin:6px 0}
code{font-size:12px}"""


@dataclass
class ReportData:
    figures: ReportFigures
    throughput: dict
    counts: dict
    settings: dict
    provenance: dict
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"figures": self.figures.as_dict(), "throughput": self.throughput, "counts": self.counts,
                "settings": self.settings, "provenance": self.provenance, "warnings": self.warnings}


def _bin_labels(edges: list[float], digits: int = 2) -> list[str]:
    return [f"{low:.{digits}f}" for low in edges[:-1]]


def _length_labels(edges: list[int]) -> list[str]:
    def short(value: int) -> str:
        return f"{value // 1_000_000}M" if value >= 1_000_000 else f"{value // 1000}k" if value >= 1000 else str(value)
    return [f"{short(low)}-{short(high)}" if i < len(edges) - 2 else f"≥{short(low)}"
            for i, (low, high) in enumerate(zip(edges, edges[1:]))]


def _figures(data: ReportData) -> list[str]:
    figures = data.figures.as_dict()
    scores, fractions, lengths = figures["score2"], figures["viral_fraction"], figures["length_by_call"]
    speed = data.throughput
    times = [speed["bin_seconds"] * (i + 0.5) for i in range(len(speed["frames_per_s"]))]
    return [
        bar_chart("figure-score2", "score2 (virus) of every scored frame", _bin_labels(scores["edges"]),
                  scores["counts"], "score2 (bin start)", "frames"),
        bar_chart("figure-viral-fraction", "viral fraction of each scored sequence", _bin_labels(fractions["edges"], 1),
                  fractions["counts"], "viral chunks / scored chunks (bin start)", "sequences"),
        stacked_bar_chart("figure-length-call", "sequence length against call", _length_labels(lengths["edges"]),
                          lengths["counts"], "sequence length (bp)", "sequences"),
        line_chart("figure-throughput", "scoring throughput over the run", times, speed["frames_per_s"],
                   "seconds since the first part started", "frames / s"),
    ]


def _table(rows: list[tuple[str, object]]) -> str:
    cells = "".join(f"<tr><th>{escape(str(key))}</th><td>{_cell(value)}</td></tr>" for key, value in rows)
    return f"<table>{cells}</table>"


def _cell(value) -> str:
    if isinstance(value, dict) and value:
        return "<br>".join(f"{escape(str(key))}: <code>{escape(_text(item))}</code>" for key, item in value.items())
    return f"<code>{escape(_text(value))}</code>"


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _shown_settings(settings: dict) -> dict:
    shown = dict(settings)
    if shown.get("min_score") is None:
        shown["min_score"] = "published rule (best score2 >= best score1)"
    if shown.get("classifier") is None:
        shown["classifier"] = "the run's own scores"
    return shown


def _data_block(data: ReportData) -> str:
    text = json.dumps(data.as_dict(), sort_keys=True).replace("</", "<\\/")
    return f'<script type="application/json" id="{DATA_ID}">{text}</script>'


def render_report(data: ReportData, title: str) -> str:
    warnings = "".join(f'<div class="warning">{escape(text)}</div>' for text in data.warnings) or "<p>none</p>"
    provenance = [(key, value) for key, value in data.provenance.items()]
    return "".join([
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        "<h2>Counts</h2>", _table(list(data.counts.items())),
        "<h2>Warnings</h2>", warnings,
        '<h2>Figures</h2><div class="figures">', "".join(_figures(data)), "</div>",
        "<h2>Thresholds</h2>", _table(list(_shown_settings(data.settings).items())),
        "<h2>Provenance</h2>", _table(provenance),
        _data_block(data), "</body></html>\n",
    ])
