"""DVC's ways of running experiments, end to end, in a throw-away clone (issue 21).

One experiment runs with `dvc exp run --temp`; two with different `adax.lr` are queued (`dvc exp run --queue -S ...`) and run by
two workers at once (`dvc queue start -j 2`); each must run with its own parameters and keep
its own metrics (`dvc exp show --json`), and the clone's workspace must be untouched. Then one
is shared through a git remote in a local folder (`dvc exp push` / `dvc exp pull`) and compared
(`python -m kexue.compare`) in a second clone.

To stay cheap the clone's chapter `04_adax` is a ten-line notebook with the real chapter's
parameters (the runner, the params files, the scale presets and DVC are the real ones): the
real chapter at smoke scale takes about a minute per run, two of them on two cores several.
About 75 s in all on a loaded 2-core machine (the queued pair about 50 s, most of it DVC's queue
workers starting; the --temp run about 15 s).
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kexue
from kexue.config import ROOT

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

NOTEBOOK = '''# %% tags=["parameters"]
seed, device, scale, threads = 0, "auto", "default", 2
report_dir = "reports/04_adax"
lr = 0.0

# %%
import json
from kexue.config import ROOT
from kexue.report import Report
report = Report(report_dir)
(report.dir / "metrics.json").write_text(json.dumps({"lr_seen": lr, "scale_seen": scale == "smoke"}))
report.summary(f"ran with lr {lr}")
'''

DVC_YAML = '''stages:
  04_adax:
    cmd: python -m kexue.run 04_adax
    deps:
      - notebooks/04_adax.py
    params:
      - common
      - adax
    outs:
      - reports/04_adax/04_adax.ipynb: {cache: false, persist: true}
    metrics:
      - reports/04_adax/metrics.json: {cache: false, persist: true}
params:
  - reports/04_adax/params.yaml
'''


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("KEXUE_ROOT",)}
    src = str(Path(kexue.__file__).resolve().parents[1])          # the code under test, in every worker
    env.update(PYTHONPATH=os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])]),
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t",
               DVC_NO_ANALYTICS="1", PATH=os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]]))
    return env


def _sh(cwd, *cmd, env, timeout=120):
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}: {done.stdout}\n{done.stderr}"
    return done.stdout


def _start_workers(cwd, env, log):
    """`dvc queue start` leaves worker daemons behind that inherit its stdout: with a pipe,
    `subprocess.run` would wait for the workers to finish, so its output goes to a file."""
    with open(log, "w") as out:
        done = subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", "2"], cwd=cwd, env=env,
                              stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=120)
    assert done.returncode == 0, Path(log).read_text()


def _clone(src, dest, env, *args):
    _sh(dest.parent, "git", "clone", "-q", *args, str(src), str(dest), env=env)
    return dest


def _exp_rows(clone, env):
    """experiment name -> (adax.lr asked, adax.lr ran, lr the notebook saw)."""
    rows = {}
    for commit in json.loads(_sh(clone, sys.executable, "-m", "dvc", "exp", "show", "--json", env=env)):
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = (rev.get("data") or {})
                params = data.get("params", {})
                asked = params.get("params.yaml", {}).get("data", {}).get("adax", {}).get("lr")
                ran = params.get("reports/04_adax/params.yaml", {}).get("data", {}).get("adax", {}).get("lr")
                seen = data.get("metrics", {}).get("reports/04_adax/metrics.json", {}).get("data", {})
                rows[rev.get("name") or exp.get("name")] = (asked, ran, seen.get("lr_seen"), seen.get("scale_seen"))
    return rows


def test_queued_pair_runs_with_own_params_and_workspace_untouched(tmp_path):
    env = _env()
    t0 = time.time()
    clone = _clone(ROOT, tmp_path / "clone", env)
    (clone / "notebooks" / "04_adax.py").write_text(NOTEBOOK)
    (clone / "dvc.yaml").write_text(DVC_YAML)
    (clone / "dvc.lock").unlink(missing_ok=True)
    _sh(clone, "git", "add", "-A", env=env)
    _sh(clone, "git", "commit", "-qm", "a cheap chapter 04 for the queue test", env=env)
    before = {p: (clone / p).read_bytes() for p in ("params.yaml", "reports/04_adax/params.yaml",
                                                      "reports/04_adax/metrics.json")}

    # `--temp`: the same copy-of-the-repository path, run at once.
    _sh(clone, sys.executable, "-m", "dvc", "exp", "run", "--temp", "-n", "lr-temp", "-S", "adax.lr=0.002",
        "-S", "common.scale=smoke", env=env, timeout=240)
    t_temp, t_queue = time.time() - t0, time.time()
    for name, lr in (("lr-small", "0.001"), ("lr-big", "0.004")):
        _sh(clone, sys.executable, "-m", "dvc", "exp", "run", "--queue", "-n", name, "-S", f"adax.lr={lr}",
            "-S", "common.scale=smoke", env=env)
    _start_workers(clone, env, tmp_path / "queue-start.log")
    deadline = time.time() + 480
    while time.time() < deadline:
        status = _sh(clone, sys.executable, "-m", "dvc", "queue", "status", env=env)
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    _sh(clone, sys.executable, "-m", "dvc", "queue", "stop", env=env)
    assert "Failed" not in status, status + _sh(clone, sys.executable, "-m", "dvc", "queue", "logs", "lr-big",
                                                 env=env)
    rows = _exp_rows(clone, env)
    assert rows["lr-small"] == (0.001, 0.001, 0.001, True), rows
    assert rows["lr-big"] == (0.004, 0.004, 0.004, True), rows
    assert rows["lr-temp"] == (0.002, 0.002, 0.002, True), rows
    # The workspace: no file changed, nothing new (the experiments live in refs/exps).
    assert _sh(clone, "git", "status", "--porcelain", env=env).strip() == ""
    assert all((clone / p).read_bytes() == b for p, b in before.items())
    print(f"clone + --temp run: {t_temp:.0f} s; queued pair (queue, 2 workers, done): {time.time() - t_queue:.0f} s")

    # Share one through a git remote in a local folder, and read it from another clone.
    remote = tmp_path / "remote.git"
    _sh(tmp_path, "git", "init", "-q", "--bare", str(remote), env=env)
    _sh(clone, "git", "remote", "add", "team", str(remote), env=env)
    _sh(clone, "git", "push", "-q", "team", "HEAD:refs/heads/main", env=env)
    _sh(clone, sys.executable, "-m", "dvc", "exp", "push", "team", "lr-big", env=env)
    other = _clone(remote, tmp_path / "other", env, "-b", "main")
    assert "lr-big" in _sh(other, sys.executable, "-m", "dvc", "exp", "list", "origin", env=env)
    _sh(other, sys.executable, "-m", "dvc", "exp", "pull", "origin", "lr-big", env=env)
    shown = _sh(other, sys.executable, "-m", "kexue.compare", "lr-big", "HEAD", "--md", env=env)
    assert "| adax.lr | 0.00400 |" in shown and "| common.scale | smoke | default |" in shown
    assert "ran with" not in shown                                   # summaries are not headline rows
