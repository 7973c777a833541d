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


# --- the project root, concurrency, clean-up (issue 21) ---

def _fake_project(folder, seed):
    (folder / "notebooks").mkdir(parents=True)
    (folder / "dvc.yaml").write_text("stages: {}\n")
    (folder / "params.yaml").write_text(f"common:\n  seed: {seed}\n")
    return folder


def test_root_is_the_project_folder_the_process_runs_in(tmp_path):
    from kexue.config import PACKAGE_ROOT, find_root
    exp = _fake_project(tmp_path / "exp", 7)
    (exp / "sub").mkdir()
    assert find_root(cwd=exp / "sub", env={}) == exp.resolve()          # nearest project folder upwards
    assert find_root(cwd=tmp_path, env={}) == PACKAGE_ROOT               # none: the installed checkout
    assert find_root(cwd=tmp_path, env={"KEXUE_ROOT": str(exp)}) == exp.resolve()
    with pytest.raises(RuntimeError, match=r"KEXUE_ROOT='.*nowhere' is not a kexue-workbook folder"):
        find_root(cwd=exp, env={"KEXUE_ROOT": str(tmp_path / "nowhere")})


def test_a_process_started_in_an_experiment_copy_reads_its_params(tmp_path):
    """What `dvc exp run --temp` and queue workers do: run the stage in another copy of the repo."""
    import os
    import subprocess
    import sys
    exp = _fake_project(tmp_path / "exp", 7)
    env = {k: v for k, v in os.environ.items() if k != "KEXUE_ROOT"}
    code = ("from kexue.config import ROOT, chapter_params; from kexue import run; "
            "print(ROOT, chapter_params('common')['seed'], run.REPORTS)")
    out = subprocess.run([sys.executable, "-c", code], cwd=exp, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [str(exp.resolve()), "7", str(exp.resolve() / "reports")]


def test_kernel_environment_names_the_root_its_code_and_the_pins(monkeypatch, tmp_path):
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.delenv("KEXUE_CPU_PINS", raising=False)
    (tmp_path / "src" / "kexue").mkdir(parents=True)
    env = run.kernel_environment(tmp_path)
    assert env["KEXUE_ROOT"] == str(tmp_path)
    assert env["PYTHONPATH"].split(":")[0] == str(tmp_path / "src")
    assert env["ATEN_CPU_CAPABILITY"] == "avx2"
    monkeypatch.setenv("KEXUE_CPU_PINS", "0")
    assert "ATEN_CPU_CAPABILITY" not in run.kernel_environment(tmp_path)


def test_a_second_run_of_the_same_chapter_refuses_and_names_the_first(sandbox, tmp_path):
    import os
    nb_dir, rep_dir = sandbox
    (nb_dir / "99_fake.py").write_text(GOOD)
    with run.chapter_lock(rep_dir / "99_fake"):
        with pytest.raises(run.ChapterBusy, match=rf"99_fake is being written by run pid {os.getpid()} "
                                                  r"\(started .*\); wait for that run"):
            run.run_chapter("99_fake", reports=rep_dir)
    assert not (rep_dir / "99_fake").exists()
    # Another output folder (another experiment's copy) has its own lock.
    with run.chapter_lock(tmp_path / "elsewhere" / "99_fake"):
        run.run_chapter("99_fake", reports=rep_dir)
    assert (rep_dir / "99_fake" / "99_fake.ipynb").exists()


def test_wait_queues_behind_the_first_run(tmp_path, capsys):
    import threading
    import time
    final, order = tmp_path / "99_fake", []
    release = threading.Event()

    def first():
        with run.chapter_lock(final):
            order.append("first in")
            release.wait(10)
            order.append("first out")
    t = threading.Thread(target=first)
    t.start()
    while not order:
        time.sleep(0.01)
    threading.Timer(0.3, release.set).start()
    with run.chapter_lock(final, wait=True):
        order.append("second in")
    t.join()
    assert order == ["first in", "first out", "second in"]
    assert "waiting for run pid" in capsys.readouterr().err


def test_run_leaves_nothing_in_the_repository_or_temp(sandbox, tmp_path, monkeypatch):
    import tempfile
    nb_dir, rep_dir = sandbox
    (nb_dir / "99_fake.py").write_text(GOOD)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    before = sorted(p.name for p in run.ROOT.iterdir())
    run.run_chapter("99_fake", reports=rep_dir)
    assert sorted(p.name for p in scratch.iterdir()) == ["kexue-locks"]        # staging + kernel folder gone
    assert list((scratch / "kexue-locks").iterdir()) == []                      # the lock file too
    assert sorted(p.name for p in run.ROOT.iterdir()) == before                 # no kernel-ipc-* sockets
    assert sorted(p.name for p in rep_dir.iterdir()) == ["99_fake"]


SLOW = GOOD + '''
# %%
import os, time
Path(os.environ["KEXUE_TEST_MARK"]).touch()        # the test signals once the kernel is in this cell
time.sleep(120)
'''

DRIVER = '''
import sys
from pathlib import Path
from kexue import run
run.NOTEBOOKS = Path(sys.argv[1])
run.SECTIONS = {"99_fake": "common"}
sys.exit(run.main(["99_fake", "--out", sys.argv[2]]))
'''


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_interrupt_ends_with_one_line_and_keeps_the_report(sandbox, tmp_path, signame):
    import signal
    import subprocess
    import sys
    import time
    nb_dir, rep_dir = sandbox
    (nb_dir / "99_fake.py").write_text(GOOD)
    run.run_chapter("99_fake", reports=rep_dir)
    before = (rep_dir / "99_fake" / "99_fake.ipynb").read_bytes()
    (nb_dir / "99_fake.py").write_text(SLOW)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    mark = tmp_path / "sleeping"
    env = {**__import__("os").environ, "TMPDIR": str(scratch), "KEXUE_TEST_MARK": str(mark)}
    p = subprocess.Popen([sys.executable, "-c", DRIVER, str(nb_dir), str(rep_dir)], env=env,
                         stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    t0 = time.time()
    while time.time() - t0 < 90 and not mark.exists():
        time.sleep(0.2)
    assert mark.exists(), "the kernel never reached the slow cell"
    time.sleep(0.5)
    p.send_signal(getattr(signal, signame))
    t1 = time.time()
    try:
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert time.time() - t1 < 30                         # stops promptly (the cell alone would take 120 s)
    assert p.returncode == 130
    assert err.strip().splitlines()[-1] == "99_fake: interrupted; previous report kept"
    assert "Traceback" not in err
    assert (rep_dir / "99_fake" / "99_fake.ipynb").read_bytes() == before
    assert sorted(x.name for x in scratch.iterdir()) == ["kexue-locks"]       # kernel folder removed
    assert sorted(x.name for x in rep_dir.iterdir()) == ["99_fake"]


# --- scales that cannot surprise ---

def test_gpu_scale_without_cuda_refuses_before_any_work(sandbox, monkeypatch):
    import torch
    nb_dir, rep_dir = sandbox
    (nb_dir / "99_fake.py").write_text(GOOD)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("KEXUE_FORCE_GPU_SCALE", raising=False)
    with pytest.raises(ParamsError, match=r"common.scale='gpu' but no CUDA device.*--force-gpu-scale"):
        run.run_chapter("99_fake", overrides={"common": {"scale": "gpu"}}, reports=rep_dir)
    assert not rep_dir.exists()
    run.check_scale({"scale": "gpu", "device": "auto"}, force=True)          # forced: allowed
    monkeypatch.setenv("KEXUE_FORCE_GPU_SCALE", "1")
    run.check_scale({"scale": "gpu", "device": "auto"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("KEXUE_FORCE_GPU_SCALE")
    run.check_scale({"scale": "gpu", "device": "auto"})                      # a GPU: fine
    with pytest.raises(ParamsError, match="common.device='cpu'"):
        run.check_scale({"scale": "gpu", "device": "cpu"})


def test_smoke_runs_go_to_a_scratch_folder(monkeypatch, tmp_path, capsys):
    seen = []
    monkeypatch.setattr(run, "run_chapter", lambda chapter, overrides, reports, **kw: seen.append(reports))
    assert run.main(["04_adax", "--scale", "smoke"]) == 0
    assert seen[-1] == run.ROOT / "build" / "smoke" and "not the committed reports/" in capsys.readouterr().err
    assert run.main(["04_adax", "--scale", "smoke", "--out", str(tmp_path / "x")]) == 0
    assert seen[-1] == tmp_path / "x"
    assert run.main(["04_adax"]) == 0 and seen[-1] == run.REPORTS                 # the stage's own run
    assert run.main(["04_adax", "--scale", "smoke", "--out", str(run.REPORTS)]) == 1
    assert "a smoke run never writes the committed reports" in capsys.readouterr().err
    assert len(seen) == 3
    assert run.main(["04_adax", "98_nope"]) == 1 and len(seen) == 3            # every name checked first
    assert "unknown chapter '98_nope'" in capsys.readouterr().err


def test_prepare_only_from_the_command_line(sandbox, tmp_path, capsys):
    nb_dir, _ = sandbox
    (nb_dir / "99_fake.py").write_text(GOOD)
    assert run.main(["99_fake", "--scale", "smoke", "--prepare-only", str(tmp_path / "nb")]) == 0
    nb = nbformat.read(tmp_path / "nb" / "99_fake.ipynb", as_version=4)
    assert any('scale = "smoke"' in c.source for c in nb.cells)
    assert "prepared" in capsys.readouterr().out


def test_staging_folder_is_named_after_the_chapter(sandbox):
    """A Report finds its chapter from its folder's name, so the per-run staging folder (outside
    the repository) carries the chapter's name, as the report folder does."""
    nb_dir, rep_dir = sandbox
    (nb_dir / "99_fake.py").write_text(GOOD + '''
# %%
(out / "folder_name.txt").write_text(Path(report_dir).name + " " + str(Path(report_dir).is_relative_to(ROOT)))
''')
    final = run.run_chapter("99_fake", reports=rep_dir)
    assert (final / "folder_name.txt").read_text() == "99_fake False"
