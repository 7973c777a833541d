"""The front page, `reports/index.html`: `python -m kexue.index` (the `index` stage).

Kept apart from `kexue.report` so that changing the page does not make the
chapters' reports stale.
"""
from __future__ import annotations

import html
import sys
from pathlib import Path

import pandas as pd

from .chapters import CHAPTERS
from .config import ROOT


def write_index(reports: Path = ROOT / "reports", chapters: dict | None = None) -> Path:
    """`reports/index.html`: every chapter, its rendered notebook, figures, metrics and claims."""
    chapters = CHAPTERS if chapters is None else chapters
    parts = ["<!doctype html><meta charset='utf-8'><title>kexue-workbook</title>",
             "<style>body{font-family:sans-serif;max-width:70em;margin:auto}td,th{border:1px solid #ccc;"
             "padding:4px;vertical-align:top}table{border-collapse:collapse}</style>",
             "<h1>kexue-workbook: reports</h1>"]
    for chapter in chapters:
        d = reports / chapter
        parts.append(f"<h2>{html.escape(chapter)}</h2>")
        if not (d / f"{chapter}.ipynb").exists():
            parts.append("<p>not run yet (<code>dvc repro</code>)</p>")
            continue
        parts.append(f"<p><a href='{chapter}/{chapter}.html'>rendered notebook</a> · "
                     f"<a href='{chapter}/{chapter}.ipynb'>.ipynb</a> · "
                     f"<a href='{chapter}/metrics.json'>metrics.json</a></p>")
        claims = d / "tables" / "claims.csv"
        if claims.exists():
            parts.append("<h3>Claims</h3>" + pd.read_csv(claims).to_html(index=False, escape=True))
        for table in sorted((d / "tables").glob("*.csv")):
            if table.name != "claims.csv" and not table.stem.endswith("_runs"):
                parts.append(f"<h3>{html.escape(table.stem)}</h3>" + pd.read_csv(table).to_html(index=False))
        for fig in sorted((d / "figures").glob("*.png")):
            parts.append(f"<h3>{html.escape(fig.stem)}</h3><img src='{chapter}/figures/{fig.name}' width='800'>")
        bench = d / "benchmark.md"
        if bench.exists():
            parts.append(f"<h3>benchmark (<a href='{chapter}/benchmark.md'>benchmark.md</a>)</h3>"
                         f"<pre>{html.escape(bench.read_text())}</pre>")
    out = reports / "index.html"
    out.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    print(f"front page: {write_index()}")
    sys.exit(0)
