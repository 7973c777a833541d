"""kexue.report: statistics and the claims table."""
import math

import numpy as np
import pytest

from kexue.index import write_index
from kexue.report import Report, mean_std


def test_mean_std_uses_sample_std():
    assert mean_std([1.0, 2.0, 3.0]) == "2.00 ± 1.00"
    assert mean_std([0.5, 0.7], digits=1, scale=100) == "60.0 ± 14.1"


def test_report_folder_and_index(tmp_path):
    import json
    import matplotlib.pyplot as plt
    import pandas as pd
    from kexue.verdicts import Verdict
    reg = tmp_path / "claims.yaml"
    reg.write_text("chapter: 01_single_loss_gan\nclaims:\n  - {id: c, claim: c<1>, source: article, rule: x}\n"
                   "  - {id: p, claim: a probe, source: probe, rule: x}\n")
    rep = Report(tmp_path / "01_single_loss_gan", registry_file=reg)
    fig = plt.figure()
    plt.plot([0, 1])
    rep.figure(fig, "line", caption="a line, $x_1$")
    assert json.loads((rep.dir / "captions.json").read_text()) == {"line": "a line, $x_1$"}
    rep.claims({"c": Verdict("supported", "significant", "a | b"),
                "p": Verdict("contradicted", "other_way", "q")}, rerun_dir=tmp_path / "none")
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
    assert "1 claims: 1 supported — and 1 probe: 1 contradicted (other_way)" in page   # counts kept apart
    assert "<td>1.5</td>" in page                                                        # status: 90 s = 1.5 min
    assert (tmp_path / "assets" / "mathjax" / "MathJax.js").exists()
    assert '<a href="book/index.html">' in page                          # the book, from the front page


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


def test_a_failed_control_caps_contradictions_equivalences_and_non_inferiority_but_not_gains(tmp_path):
    """Report.claims applies each claim's registered control: a blind testbed can neither contradict a claim
    nor 'show' an equivalence or a non-inferiority (both rule names), while a gain it found stands."""
    import pandas as pd
    from kexue.verdicts import Verdict
    reg = tmp_path / "claims.yaml"
    reg.write_text("chapter: 04_adax\nclaims:\n"
                   "  - {id: gain, claim: g, source: article, rule: superiority, control: ctl}\n"
                   "  - {id: against, claim: a, source: article, rule: superiority, control: ctl}\n"
                   "  - {id: eq, claim: e, source: article, rule: equivalence (TOST), control: ctl}\n"
                   "  - {id: noninf, claim: n, source: paper, rule: non-inferiority (A + m beats B), control: ctl}\n"
                   "  - {id: free, claim: f, source: probe, rule: equivalence, control: null}\n")
    rep = Report(tmp_path / "04_adax", registry_file=reg)
    failed = Verdict("inconclusive at this scale", "straddles", "known pair: straddles")
    table = rep.claims({"gain": Verdict("supported", "significant", "g"),
                        "against": Verdict("contradicted", "inside_margin", "a"),
                        "eq": Verdict("supported", "equivalent", "e"),
                        "noninf": Verdict("supported", "significant", "n"),
                        "free": Verdict("supported", "equivalent", "f")},
                       controls={"ctl": failed}, rerun_dir=tmp_path / "none").set_index("id")
    got = {i: (r.verdict, r.reason) for i, r in table.iterrows()}
    capped = ("inconclusive at this scale", "testbed_cannot_discriminate")
    assert got == {"gain": ("supported", "significant"), "against": capped, "eq": capped, "noninf": capped,
                   "free": ("supported", "equivalent")}
    assert pd.read_csv(rep.dir / "tables" / "claims.csv").set_index("id").loc["noninf", "control"].startswith("failed")


def test_claims_summary_plurals(tmp_path):
    import pandas as pd
    from kexue.claims import claims_summary
    f = tmp_path / "claims.csv"
    pd.DataFrame({"id": range(3), "claim": list("abc"), "source": ["article", "identity", "identity"],
                  "verdict": ["supported"] * 3, "reason": ["significant", "within_tolerance", "within_tolerance"]}
                 ).to_csv(f, index=False)
    assert claims_summary(f) == "1 claims: 1 supported — and 2 identities: 2 supported"
