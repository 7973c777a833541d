"""kexue.report: statistics and the claims table."""
import math

import numpy as np
import pytest

from kexue.index import write_index
from kexue.report import VERDICTS, Report, claims_table, compare, mean_std


def test_paired_t_matches_hand_computation():
    a = np.array([0.80, 0.83, 0.78, 0.81])
    b = a - np.array([0.010, 0.012, 0.009, 0.011])      # consistently lower, big spread across seeds
    d = a - b
    t_hand = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    t, p, word = compare(a, b, paired=True)
    assert t == pytest.approx(t_hand, rel=1e-12)
    assert p < 0.01 and word == "higher"
    # Unpaired, the same gap drowns in the seed-to-seed spread.
    assert compare(a, b)[2] == "tied"
    assert compare(b, a, paired=True)[2] == "lower"


def test_welch_t_matches_hand_computation():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 9.0])
    se = math.sqrt(a.var(ddof=1) / 4 + b.var(ddof=1) / 3)
    assert compare(a, b)[0] == pytest.approx((a.mean() - b.mean()) / se, rel=1e-12)


def test_compare_degenerate_cases_are_tied():
    assert compare([0.5], [0.4])[2] == "tied"
    assert compare([0.5, 0.5], [0.5, 0.5], paired=True)[2] == "tied"


def test_mean_std_uses_sample_std():
    assert mean_std([1.0, 2.0, 3.0]) == "2.00 ± 1.00"
    assert mean_std([0.5, 0.7], digits=1, scale=100) == "60.0 ± 14.1"


def test_claims_table_rejects_unknown_verdicts():
    rows = [{"claim": "c", "evidence": "e", "verdict": v} for v in VERDICTS]
    assert list(claims_table(rows)["verdict"]) == list(VERDICTS)
    with pytest.raises(ValueError, match="verdict 'true' for claim 'c'"):
        claims_table([{"claim": "c", "evidence": "e", "verdict": "true"}])
    with pytest.raises(ValueError, match="needs keys"):
        claims_table([{"claim": "c", "verdict": "supported"}])


def test_report_folder_and_index(tmp_path):
    import json
    import matplotlib.pyplot as plt
    import pandas as pd
    rep = Report(tmp_path / "01_single_loss_gan")
    fig = plt.figure()
    plt.plot([0, 1])
    rep.figure(fig, "line", caption="a line, $x_1$")
    assert json.loads((rep.dir / "captions.json").read_text()) == {"line": "a line, $x_1$"}
    rep.claims([{"claim": "c<1>", "evidence": "a | b", "verdict": "supported"}])
    rep.show(pd.DataFrame({"a": [1.23456]}), name="numbers")
    rep.finding("first **finding** 1.5")
    rep.finding("second")
    rep.summary("1 supported")
    assert (rep.dir / "findings.md").read_text() == "- first **finding** 1.5\n- second\n"
    (rep.dir / "01_single_loss_gan.ipynb").write_text("{}")
    (rep.dir / "01_single_loss_gan.html").write_text("<html></html>")
    (rep.dir / "benchmark.md").write_text("# t\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    (rep.dir / "status.json").write_text(json.dumps({"chapter": "01_single_loss_gan", "scale": "default",
                                                     "device": "cpu (x)", "threads": 2, "stage_seconds": 90,
                                                     "finished_utc": "2026-01-01 00:00", "git_revision": "abc"}))
    page = write_index(tmp_path, {"01_single_loss_gan": "gan", "02_energy_based_model": "ebm"}).read_text()
    assert "01_single_loss_gan/figures/line.png" in page and "c&lt;1&gt;" in page and "a | b" in page
    assert "a line" in page and "first <strong>finding</strong> 1.5" in page
    assert "Not run yet" in page and "not run yet" in page            # 02 missing; 03-05 registered, no report
    assert "planned" not in page                                        # every chapter of the book is registered
    assert "<table class='kexue-table'>\n<thead>" in page                # benchmark as a table
    assert "1 supported" in page and "<td>1.5</td>" in page              # status: 90 s = 1.5 min
    assert (tmp_path / "assets" / "mathjax" / "MathJax.js").exists()


def test_number_formatting():
    from kexue.report import fmt, table_html
    assert fmt(513672934852.382) == "5.14e+11" and fmt(0.000123) == "1.23e-04"
    assert fmt(12.3456) == "12.3" and fmt(0.5) == "0.500" and fmt(45000) == "45,000" and fmt(7) == "7"
    assert fmt(float("nan")) == "n/a" and fmt(None) == "n/a"
    import pandas as pd
    html = table_html(pd.DataFrame({"x": [1.23456], "t": ["a|b<"]}))
    assert "1.23" in html and "a|b&lt;" in html and "Unnamed" not in html and "<th>0</th>" not in html


def test_progress_prints_plain_lines_when_not_on_a_terminal():
    import io
    from kexue.report import progress
    out = io.StringIO()                                   # not a terminal
    items = list(progress(range(50), desc="long run", file=out, mininterval=0.0))
    assert items == list(range(50))
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2 and all(line.startswith("long run:") for line in lines)
    assert "\r" not in out.getvalue() and "50/50" in lines[-1]
    bar = progress(desc="steps", total=4, file=out, mininterval=0.0)
    for _ in range(4):
        bar.update(1)
    bar.close()
    assert "4/4" in out.getvalue().splitlines()[-1]


def test_progress_off_a_terminal_says_when_a_short_loop_ends():
    import io
    from kexue.report import progress
    out = io.StringIO()
    list(progress(range(3), desc="short", file=out))       # well under the 30 s between lines
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("short:") and "0/3" in lines[0] and "3/3" in lines[-1]
