"""Static checks of the chapters: text notebooks, stages, and committed reports."""
import json
from pathlib import Path

import jupytext
import pytest
import yaml

from kexue.config import ROOT
from kexue.run import SECTIONS, VOLATILE_CELL_KEYS

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
REPORT_NBS = sorted((ROOT / "reports").glob("[0-9][0-9]_*/*.ipynb"))
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_every_chapter_has_notebook_and_stage():
    assert [p.stem for p in NOTEBOOKS] == sorted(SECTIONS)
    for chapter, section in SECTIONS.items():
        stage = DVC["stages"][chapter]
        assert stage["cmd"] == f"python -m kexue.run {chapter}"
        assert f"notebooks/{chapter}.py" in stage["deps"]
        assert "common" in stage["params"] and section in stage["params"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_text_notebook_is_valid_jupytext_with_one_parameters_cell(path):
    nb = jupytext.read(path)
    assert nb.metadata["jupytext"]["text_representation"]["format_name"] == "percent"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert "report_dir" in tagged[0].source
    assert nb.cells[0].cell_type == "markdown"
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("path", REPORT_NBS, ids=lambda p: p.name)
def test_committed_report_has_no_volatile_metadata_and_no_errors(path):
    nb = json.loads(path.read_text())
    pm = nb["metadata"].get("papermill", {})
    assert not {"start_time", "end_time", "duration"} & set(pm), path
    for i, cell in enumerate(nb["cells"]):
        cpm = cell.get("metadata", {}).get("papermill", {})
        assert not set(VOLATILE_CELL_KEYS) & set(cpm), f"{path} cell {i}"
        assert "execution" not in cell.get("metadata", {}), f"{path} cell {i}"
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"{path} cell {i} has an error output"
    stage = Path(path).parent.name
    assert (ROOT / "reports" / stage / "metrics.json").exists()
    assert (ROOT / "reports" / stage / f"{stage}.html").exists()


@pytest.mark.parametrize("path", REPORT_NBS, ids=lambda p: p.name)
def test_committed_report_shows_every_saved_figure_inline_and_no_timing(path):
    nb = json.loads(path.read_text())
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    n_inline = sum("image/png" in o.get("data", {}) for o in outputs)
    n_saved = len(list((path.parent / "figures").glob("*.png")))
    assert n_saved >= 1 and n_inline >= n_saved, f"{path.name}: {n_inline} figures inline, {n_saved} saved"
    assert not any("text/markdown" in o.get("data", {}) and "|---" in "".join(o["data"]["text/markdown"])
                   for o in outputs), "tables are shown as HTML, never as Markdown pipes"
    metrics = (path.parent / "metrics.json").read_text()
    assert "seconds" not in metrics and "_time" not in metrics, "wall-clock timings belong to status.json"
    for name in ("summary.md", "findings.md", "params.yaml", "status.json"):
        assert (path.parent / name).exists(), name


def test_chapter_stages_declare_what_the_runner_writes():
    for chapter in SECTIONS:
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in DVC["stages"][chapter]["outs"]]
        for name in (f"{chapter}.ipynb", f"{chapter}.html", "figures", "tables", "summary.md", "findings.md",
                     "params.yaml", "status.json"):
            assert f"reports/{chapter}/{name}" in outs, (chapter, name)
        assert f"reports/{chapter}/params.yaml" in DVC["params"]      # `dvc exp show` lists what ran


def test_readme_findings_are_generated_from_the_committed_reports():
    from kexue.index import BEGIN, END, readme_findings
    text = (ROOT / "README.md").read_text()
    block = BEGIN + text.split(BEGIN, 1)[1].split(END, 1)[0] + END
    assert block == readme_findings(), "README's findings differ from the reports: run `python -m kexue.index`"
