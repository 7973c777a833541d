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

# %%
from kexue.report import Report
Report(out).note("a generated note")           # rich output: its text/plain must be stable too
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
    # The reader sees the folder the report lives in, not the staging folder the kernel wrote to.
    assert f'report_dir = "{final}"' in injected[0].source or 'report_dir = "reports/99_fake"' in injected[0].source
    assert ".staging" not in injected[0].source
    assert "hello from the notebook" in json.dumps(nb.cells[-2].outputs)
    assert [p.name for p in rep_dir.iterdir()] == ["99_fake"]    # no staging left behind
    # The values that ran, and the run's status (kept out of the notebook and of metrics.json).
    ran = yaml.safe_load((final / "params.yaml").read_text())
    assert ran["common"]["seed"] == 5 and ran["common"]["scale"] == "default"
    status = json.loads((final / "status.json").read_text())
    assert {"scale", "device", "stage_seconds", "finished_utc", "git_revision"} <= set(status)
    assert status["stage_seconds"] >= 0 and status["device"].startswith(("cpu", "cuda"))
    # Where the time went, per section; no more than the whole stage.
    assert set(status["section_seconds"]) == {"(before the first heading)"}
    assert 0 <= sum(status["section_seconds"].values()) <= status["stage_seconds"] + 0.1
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


CLAIMS = '''# %% tags=["parameters"]
seed, device, scale, threads = 0, "auto", "default", 2
report_dir = "nowhere"

# %%
import json
import pandas as pd
from kexue.config import ROOT
from kexue.report import Report
from kexue.verdicts import Verdict
registry = ROOT / report_dir / "registry.yaml"
registry.parent.mkdir(parents=True, exist_ok=True)
registry.write_text("chapter: 99_fake\\nclaims:\\n"
                    "  - {id: c, claim: c, source: article, rule: test}\\n"
                    "  - {id: d, claim: d, source: probe, rule: test}\\n")
report = Report(ROOT / report_dir, chapter="99_fake", registry_file=registry)
verdict = Verdict("supported", "significant", f"seed {seed}") if seed < 500 else Verdict(
    "contradicted", "other_way", f"seed {seed}")
claims = report.claims({"c": verdict, "d": Verdict("supported", "significant", "always")},
                       rerun_dir=ROOT / "reports" / "99_fake" / "rerun")
metrics = {"m": float(seed), "m_sd": 2.0}
(report.dir / "metrics.json").write_text(json.dumps(metrics))
report.verify(claims, metrics, ROOT / "reports" / "99_fake" / "rerun")
'''


def test_verify_reruns_with_disjoint_seeds_and_the_chapter_compares(sandbox, monkeypatch):
    from kexue import verify
    nb_dir, rep_dir = sandbox
    (nb_dir / "99_fake.py").write_text(CLAIMS)
    monkeypatch.setattr(verify, "chapter_section", lambda c: "common")
    kept = verify.rerun_chapter("99_fake", seed_offset=1000, reports=rep_dir)
    assert sorted(p.name for p in kept.iterdir()) == ["claims.csv", "metrics.json", "params.yaml"]
    assert yaml.safe_load((kept / "params.yaml").read_text())["common"]["seed"] == 1000
    rerun = __import__("pandas").read_csv(kept / "claims.csv")
    assert list(rerun.verdict) == ["contradicted", "supported"]     # the seed-dependent claim flipped
    with pytest.raises(ParamsError, match="seed-offset=0"):
        verify.rerun_chapter("99_fake", seed_offset=0, reports=rep_dir)


def _registry(tmp_path, margin="null"):
    f = tmp_path / "claims.yaml"
    f.write_text("chapter: 99_fake\nclaims:\n"
                 f"  - {{id: c, claim: the claim c, source: article, rule: superiority, margin: {margin}, control: ctl}}\n"
                 "  - {id: d, claim: d, source: identity, rule: identity_rule}\n")
    return f


def test_report_claims_replicate_cap_and_check_the_registry(tmp_path):
    import pandas as pd
    from kexue.report import Report
    from kexue.verdicts import Verdict, superiority
    rerun = tmp_path / "rerun"
    rerun.mkdir()
    pd.DataFrame({"id": ["c", "d"], "claim": ["the claim c", "d"], "verdict_this_run": ["supported", "supported"],
                  "reason_this_run": ["significant", "within_tolerance"]}).to_csv(rerun / "claims.csv", index=False)
    (rerun / "metrics.json").write_text(json.dumps({"m": 1006.0}))
    rep = Report(tmp_path / "r", chapter="99_fake", registry_file=_registry(tmp_path, "0.5"))
    against = Verdict("contradicted", "inside_margin", "e", p_against=0.01, margin=0.5)
    ok = Verdict("supported", "within_tolerance", "f")
    failed_control = Verdict("inconclusive at this scale", "straddles", "the control")
    df = rep.claims({"c": against, "d": ok}, controls={"ctl": failed_control}, rerun_dir=rerun)
    assert list(df.claim) == ["the claim c", "d"] and list(df.source) == ["article", "identity"]
    assert df.loc[0, "verdict_this_run"] == "inconclusive at this scale"           # capped by the control
    assert df.loc[0, "reason"] == "unstable_on_rerun"                               # and differs from the rerun
    assert df.loc[0, "control"].startswith("failed")
    assert df.loc[1, "verdict"] == "supported" and df.loc[0, "margin"] == "0.500"
    v = pd.read_csv(rep.dir / "tables" / "verify.csv")
    assert list(v.columns[:4]) == ["id", "claim", "verdict", "verdict_on_rerun"]
    shown = rep.verify(df, {"m": 1000.0, "m_sd": 2.0}, rerun)
    m = pd.read_csv(rep.dir / "tables" / "verify_metrics.csv")
    assert m.loc[0, "change"] == 6.0 and m.loc[0, "change / seed sd"] == 3.0 and len(shown) == 2
    # a verdict decided with another margin than the registered one is refused
    wrong = superiority([1.0, 2.0, 3.0], [0.0, 1.0, 2.5], paired=True, margin=0.4)
    with pytest.raises(ValueError, match="registered 0.5"):
        rep.claims({"c": wrong, "d": ok}, controls={"ctl": failed_control}, rerun_dir=rerun)
    with pytest.raises(ValueError, match="missing"):
        rep.claims({"c": against}, controls={"ctl": failed_control}, rerun_dir=rerun)
    with pytest.raises(ValueError, match="positive control 'ctl'"):
        rep.claims({"c": against, "d": ok}, rerun_dir=rerun)
    # no rerun yet: said so, not silently "unchanged"
    rep2 = Report(tmp_path / "s", chapter="99_fake", registry_file=_registry(tmp_path))
    df = rep2.claims({"c": Verdict("supported", "significant", "x"), "d": ok},
                     controls={"ctl": Verdict("supported", "significant", "y")}, rerun_dir=tmp_path / "none")
    assert set(df.verdict_on_rerun) == {"not rerun yet"} and list(df.verdict) == ["supported", "supported"]


def test_section_seconds_sums_cell_durations_under_each_heading():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("a = 1", metadata={"papermill": {"duration": 0.5}}),
        nbformat.v4.new_markdown_cell("## 1. First\ntext"),
        nbformat.v4.new_code_cell("b = 1", metadata={"papermill": {"duration": 2.0}}),
        nbformat.v4.new_code_cell("c = 1", metadata={"papermill": {"duration": 3.25}}),
        nbformat.v4.new_markdown_cell("### a sub-heading does not start a section"),
        nbformat.v4.new_code_cell("d = 1", metadata={"papermill": {"duration": 1.0}}),
        nbformat.v4.new_markdown_cell("## 2. Second"),
        nbformat.v4.new_code_cell("e = 1", metadata={"papermill": {}}),     # never ran: not counted
    ])
    assert run.section_seconds(nb) == {"(before the first heading)": 0.5, "1. First": 6.2}
