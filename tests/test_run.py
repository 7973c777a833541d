"""kexue.run: the one notebook runner, on a throw-away chapter (runs a real kernel)."""
import json
import re

import nbformat
import pytest
import yaml

from kexue import run
from kexue.config import ParamsError

GOOD = '''# %% tags=["parameters"]
seed, device, scale, threads = 0, "auto", "default", 2
report_dir = "nowhere"
fail = False

# %%
from pathlib import Path
from kexue.config import ROOT
out = ROOT / report_dir
(out / "figures").mkdir(parents=True, exist_ok=True)
(out / "figures" / "a.txt").write_text(f"seed={seed} scale={scale}")
print("hello from the notebook")
'''
BAD = GOOD + '''
# %%
raise ValueError("boom in the third cell")
'''


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    nb_dir, rep_dir = tmp_path / "notebooks", tmp_path / "reports"
    nb_dir.mkdir()
    monkeypatch.setattr(run, "NOTEBOOKS", nb_dir)
    monkeypatch.setattr(run, "SECTIONS", {"99_fake": "common"})
    return nb_dir, rep_dir


def test_run_writes_report_without_volatile_metadata(sandbox):
    nb_dir, rep_dir = sandbox
    (nb_dir / "99_fake.py").write_text(GOOD)
    final = run.run_chapter("99_fake", overrides={"common": {"seed": 5}}, reports=rep_dir)
    assert (final / "figures" / "a.txt").read_text() == "seed=5 scale=default"
    assert (final / "99_fake.html").stat().st_size > 1000
    text = (final / "99_fake.ipynb").read_text()
    for key in ("start_time", "end_time", '"duration"'):
        assert key not in text
    nb = nbformat.read(final / "99_fake.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "seed = 5" in injected[0].source
    assert "hello from the notebook" in json.dumps(nb.cells[-1].outputs)
    assert [p.name for p in rep_dir.iterdir()] == ["99_fake"]    # no staging left behind
    # The values that ran, and the run's status (kept out of the notebook and of metrics.json).
    ran = yaml.safe_load((final / "params.yaml").read_text())
    assert ran["common"]["seed"] == 5 and ran["common"]["scale"] == "default"
    status = json.loads((final / "status.json").read_text())
    assert {"scale", "device", "stage_seconds", "finished_utc", "git_revision"} <= set(status)
    assert status["stage_seconds"] >= 0 and status["device"].startswith(("cpu", "cuda"))
    page = (final / "99_fake.html").read_text()
    assert 'href="../index.html"' in page and "assets/mathjax/MathJax.js" in page
    assert not re.search(r'<script[^>]+src="https?://', page)          # nothing from the network
    assert "seed, device, scale, threads = 0" not in page               # parameters shown once
    # A rerun with the same params gives the same bytes.
    before = (final / "99_fake.ipynb").read_bytes()
    run.run_chapter("99_fake", overrides={"common": {"seed": 5}}, reports=rep_dir)
    assert (final / "99_fake.ipynb").read_bytes() == before


def test_failing_cell_is_named_and_previous_report_stays(sandbox):
    nb_dir, rep_dir = sandbox
    (nb_dir / "99_fake.py").write_text(GOOD)
    final = run.run_chapter("99_fake", reports=rep_dir)
    before = (final / "99_fake.ipynb").read_bytes()
    (nb_dir / "99_fake.py").write_text(BAD)
    with pytest.raises(run.NotebookFailed, match=r"99_fake: cell \d+ .*ValueError: boom in the third cell"):
        run.run_chapter("99_fake", reports=rep_dir)
    assert (final / "99_fake.ipynb").read_bytes() == before
    assert [p.name for p in rep_dir.iterdir()] == ["99_fake"]


def test_bad_params_fail_before_any_work(sandbox):
    nb_dir, rep_dir = sandbox
    (nb_dir / "99_fake.py").write_text(GOOD)
    with pytest.raises(ParamsError, match=r"common\.seed=-1: must be >= 0"):
        run.run_chapter("99_fake", overrides={"common": {"seed": -1}}, reports=rep_dir)
    assert not rep_dir.exists()
    with pytest.raises(ParamsError, match="unknown chapter '98_nope'"):
        run.run_chapter("98_nope", reports=rep_dir)


def test_notebook_needs_exactly_one_parameters_cell(sandbox):
    nb_dir, rep_dir = sandbox
    (nb_dir / "99_fake.py").write_text(GOOD.replace(' tags=["parameters"]', ""))
    with pytest.raises(ValueError, match="exactly one cell tagged 'parameters', found 0"):
        run.run_chapter("99_fake", reports=rep_dir)


def test_prepare_only_injects_scale(sandbox, tmp_path):
    nb_dir, _ = sandbox
    (nb_dir / "99_fake.py").write_text(GOOD)
    params = run.prepare("99_fake", tmp_path / "p.ipynb", tmp_path / "r", {"common": {"scale": "smoke"}})
    assert params["scale"] == "smoke"
    nb = nbformat.read(tmp_path / "p.ipynb", as_version=4)
    assert any('scale = "smoke"' in c.source for c in nb.cells)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
