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
    import matplotlib.pyplot as plt
    import pandas as pd
    rep = Report(tmp_path / "99_x")
    fig = plt.figure()
    plt.plot([0, 1])
    rep.figure(fig, "line")
    rep.table(claims_table([{"claim": "c<1>", "evidence": "e", "verdict": "supported"}]), "claims", index=False)
    rep.table(pd.DataFrame({"a": [1]}), "numbers")
    (rep.dir / "99_x.ipynb").write_text("{}")
    (rep.dir / "benchmark.md").write_text("| a | <b> |")
    page = write_index(tmp_path, {"99_x": "x", "98_y": "y"}).read_text()
    assert "99_x/figures/line.png" in page and "c&lt;1&gt;" in page and "numbers" in page
    assert "not run yet" in page and "| a | &lt;b&gt; |" in page
