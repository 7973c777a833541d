"""kexue.compare: two runs side by side (only changed params; headline metrics and verdicts)."""
import json
import subprocess

import pytest

from kexue import compare


def _write(root, lr, acc, verdict):
    (root / "reports" / "04_adax" / "tables").mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(f"common:\n  seed: 0\nadax:\n  lr: {lr}\n  steps: 100\n")
    (root / "reports" / "04_adax" / "params.yaml").write_text(f"common:\n  scale: smoke\nadax:\n  lr: {lr}\n")
    (root / "reports" / "04_adax" / "metrics.json").write_text(json.dumps(
        {"long_run": {"steps": 100}, "final": {"AdaX": {"test_acc_mean": acc, "test_acc_std": 0.5}},
         "train_loss": {"AdaX": 0.3}}))
    (root / "reports" / "04_adax" / "tables" / "claims.csv").write_text(
        f"claim,evidence,verdict\nAdaX beats Adam,\"x, y\",{verdict}\nno blow-up,z,supported\n")


@pytest.fixture
def repo(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    _write(tmp_path, 0.001, 87.25, "not supported")
    subprocess.run(git + ["-C", str(tmp_path), "add", "-A"], check=True)
    subprocess.run(git + ["-C", str(tmp_path), "commit", "-qm", "base"], check=True)
    return tmp_path


def test_workspace_against_head_shows_only_what_changed(repo):
    _write(repo, 0.003, 88.5, "supported")
    ran = repo / "reports" / "04_adax" / "params.yaml"
    ran.write_text(ran.read_text().replace("scale: smoke", "scale: default"))   # what ran, not asked
    a, b = compare.resolve("workspace", repo), compare.resolve("HEAD", repo)
    sections = dict((t, rows) for t, _, rows in compare.comparison(a, b))
    assert sections["Parameters that differ"] == [["adax.lr", "0.00300", "0.00100"],
                                                  ["common.scale (ran, 04_adax)", "default", "smoke"]]
    rows = {r[0]: r[1:] for r in sections["04_adax"]}
    assert rows["final.AdaX.test_acc_mean"] == ["88.5 ± 0.500", "87.2 ± 0.500", "*"]
    assert rows["long_run.steps"] == ["100", "100", ""]
    assert "train_loss.AdaX" not in rows                         # not a headline metric
    assert rows["verdict: AdaX beats Adam"] == ["supported", "not supported", "*"]
    assert rows["verdict: no blow-up"] == ["supported", "supported", ""]
    assert sections["01_single_loss_gan"] == [["(no report on either side)", "", "", ""]]
    md = compare.to_markdown(a, b, compare.comparison(a, b))
    assert "## 04_adax" in md and "| adax.lr | 0.00300 | 0.00100 |" in md
    term = compare.to_terminal(a, b, compare.comparison(a, b))
    assert "|" not in term.split("04_adax")[1].splitlines()[2] and "88.5 ± 0.500" in term


def test_experiment_names_and_bad_names(repo):
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    subprocess.run(["git", "-C", str(repo), "update-ref", "refs/exps/ab/cdef0123/lucky-lr", sha], check=True)
    subprocess.run(["git", "-C", str(repo), "update-ref", "refs/exps/celery/stash", sha], check=True)   # not one
    side = compare.resolve("lucky-lr", repo)
    assert side.rev == sha and "experiment" in side.label
    assert compare.experiments(repo) == {"lucky-lr": sha}
    with pytest.raises(compare.CompareError, match=r"'nope' is neither 'workspace', a git revision nor a DVC "
                                                   r"experiment \(experiments here: lucky-lr\)"):
        compare.resolve("nope", repo)


def test_cli_prints_both_formats(capsys):
    assert compare.main(["workspace", "HEAD", "--md"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# workspace vs HEAD") and "## 04_adax" in out and "## Parameters that differ" in out
    assert compare.main(["no-such-rev-xyz"]) == 1
    assert "neither 'workspace'" in capsys.readouterr().err
