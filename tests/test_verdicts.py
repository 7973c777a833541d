"""kexue.verdicts: every outcome of every rule, against independent computations."""
import math

import numpy as np
import pytest
from scipy import stats

from kexue.verdicts import (meets_target, INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Verdict, all_of, describe_events, difference,
                            divergence, equivalence, holm, min_detectable_difference, superiority,
                            superiority_family, time_to_event)

RNG = np.random.default_rng(0)
BASE = RNG.normal(0, 1, 12)          # shared seed effect: large spread across seeds


def test_paired_difference_matches_scipy_and_hand_interval():
    a = BASE + 0.5 + RNG.normal(0, 0.05, 12)
    b = BASE
    d = difference(a, b, paired=True, level=0.95)
    diff = a - b
    se = diff.std(ddof=1) / math.sqrt(12)
    assert d.estimate == pytest.approx(diff.mean(), rel=1e-12)
    assert d.p == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-9)
    q = stats.t.ppf(0.975, 11)
    assert (d.low, d.high) == pytest.approx((diff.mean() - q * se, diff.mean() + q * se), rel=1e-12)


def test_welch_difference_matches_scipy():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 9.0])
    d = difference(a, b, paired=False)
    assert d.p == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)


def test_diverged_runs_are_counted_not_averaged():
    a = np.r_[BASE[:8] + 1.0, np.nan]
    b = np.r_[BASE[:8], 0.3]
    d = difference(a, b, paired=True)
    assert d.n == 8 and d.diverged_a == 1 and d.diverged_b == 0
    assert d.estimate == pytest.approx(1.0) and d.p < 1e-6          # the NaN does not turn p into 1
    assert "diverged runs excluded: 1 and 0" in d.text()


def test_superiority_outcomes():
    noise = RNG.normal(0, 0.1, 12)
    better = superiority(BASE + 1 + noise, BASE, paired=True)
    worse = superiority(BASE - 1 + noise, BASE, paired=True)
    unclear = superiority(BASE + 0.02 + RNG.normal(0, 1, 12), BASE, paired=True)
    assert (better.verdict, worse.verdict, unclear.verdict) == (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)
    # Lower is better (e.g. FD): a lower a supports the claim.
    assert superiority(BASE - 1 + noise, BASE, paired=True, higher_is_better=False).verdict == SUPPORTED
    # A tight interval inside a stated margin: no gain that matters.
    tiny = superiority(BASE + RNG.normal(0, 0.01, 12), BASE, paired=True, margin=0.5)
    assert tiny.verdict == NOT_SUPPORTED and "no gain that matters" in tiny.evidence
    # Unpaired, the same gain drowns in the seed spread; paired, it does not.
    small = BASE + 0.3 + RNG.normal(0, 0.02, 12)
    assert superiority(small, BASE, paired=True).verdict == SUPPORTED
    assert superiority(small, BASE, paired=False).verdict == INCONCLUSIVE


def test_equivalence_outcomes_match_tost_by_hand():
    noise = RNG.normal(0, 0.1, 20)
    base = RNG.normal(0, 1, 20)
    same = equivalence(base + noise, base, margin=0.5, paired=True)
    far = equivalence(base + 3 + noise, base, margin=0.5, paired=True)
    wide = equivalence(base + RNG.normal(0, 2, 20), base, margin=0.5, paired=True)
    assert (same.verdict, far.verdict, wide.verdict) == (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)
    # TOST p by hand: the larger of the two one-sided t-test p-values.
    d = noise
    se = d.std(ddof=1) / math.sqrt(20)
    p1 = stats.t.sf((d.mean() + 0.5) / se, 19)
    p2 = stats.t.cdf((d.mean() - 0.5) / se, 19)
    assert same.p == pytest.approx(max(p1, p2), rel=1e-6)
    with pytest.raises(ValueError, match="margin must be > 0, got 0"):
        equivalence([1, 2], [1, 2], margin=0, paired=True)


def test_equivalence_with_too_few_runs_is_inconclusive():
    assert equivalence([1.0, np.nan], [1.0, 1.0], margin=1, paired=True).verdict == INCONCLUSIVE


def test_holm_matches_hand_computation():
    p = [0.01, 0.04, 0.03, 0.20]
    # sorted: 0.01*4=0.04, 0.03*3=0.09, 0.04*2=0.08 -> max(0.09, 0.08)=0.09, 0.20*1 -> 0.20
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.20])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_superiority_family_applies_the_correction():
    # Each at p about 0.03 alone: significant alone, not after correcting over 3 tests.
    rng = np.random.default_rng(3)
    fam = {}
    for k in range(3):
        base = rng.normal(0, 1, 6)
        a = base + 0.5 + 1.6 * np.array([0.3, -0.3, 0.25, -0.25, 0.1, -0.1])
        fam[f"c{k}"] = (a, base)
    single = superiority(*fam["c0"], paired=True)
    assert single.verdict == SUPPORTED and 0.01 < single.p < 0.05
    corrected = superiority_family(fam, paired=True)
    assert all(v.verdict == INCONCLUSIVE for v in corrected.values())
    assert "Holm-adjusted" in corrected["c0"].evidence


def test_superiority_family_margin_rules_out_a_gain_too_small_to_matter():
    base = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    tiny = base + np.array([0.01, -0.012, 0.008, -0.006, 0.011, -0.009])       # mean 0.0003, sd about 0.01
    big = base + np.array([0.5, -0.6, 0.4, -0.3, 0.55, -0.45])                  # mean 0.0167, sd about 0.5
    fam = superiority_family({"tiny": (tiny, base), "big": (big, base)}, paired=True,
                             margins={"tiny": 0.1, "big": 0.1})
    # the tiny difference's 90% interval by hand lies inside +-0.1: no gain that matters
    d = tiny - base
    half = stats.t.ppf(0.95, 5) * d.std(ddof=1) / np.sqrt(6)
    assert -0.1 < d.mean() - half and d.mean() + half < 0.1
    assert fam["tiny"].verdict == NOT_SUPPORTED and "no gain that matters" in fam["tiny"].evidence
    assert fam["big"].verdict == INCONCLUSIVE                    # its interval reaches past the margin
    assert superiority_family({"tiny": (tiny, base)}, paired=True)["tiny"].verdict == INCONCLUSIVE
    with pytest.raises(ValueError, match="margins"):
        superiority_family({"tiny": (tiny, base)}, paired=True, margins={"other": 0.1})


def test_all_of_combines_parts():
    s, n, i = Verdict(SUPPORTED, "s", 0.01), Verdict(NOT_SUPPORTED, "n", 0.01), Verdict(INCONCLUSIVE, "i", 0.3)
    assert all_of([s, s]).verdict == SUPPORTED
    assert all_of([s, i]).verdict == INCONCLUSIVE
    assert all_of([s, i, n]).verdict == NOT_SUPPORTED
    assert all_of([s, n]).evidence == "s; n"
    assert all_of([s, n], label="both", show_parts=True).evidence == "both: s → supported; n → not supported"
    with pytest.raises(ValueError):
        Verdict("true", "x")


def test_same_either_way_needs_every_measure_to_agree():
    from kexue.verdicts import same_either_way
    s, n, i = Verdict(SUPPORTED, "s", 0.01), Verdict(NOT_SUPPORTED, "n", 0.01), Verdict(INCONCLUSIVE, "i", 0.3)
    assert same_either_way([s, s]).verdict == SUPPORTED
    assert same_either_way([n, n]).verdict == NOT_SUPPORTED
    both = same_either_way([s, n], label="smoother")
    assert both.verdict == INCONCLUSIVE
    assert both.evidence == "smoother: s → supported; n → not supported; the measures disagree"
    assert same_either_way([i, i]).verdict == INCONCLUSIVE
    with pytest.raises(ValueError):
        same_either_way([])


def test_time_to_event_ranks_the_never_marker_beyond_every_count():
    adax = [-1, -1, -1, 900, -1]           # mostly "longer than the run": the strongest evidence
    adam = [240, 250, 230, 245, 238]
    v = time_to_event(adax, adam, names=("AdaX", "Adam"), run_length=4000)
    assert v.verdict == SUPPORTED and "4/5 longer than the run (4,000 steps)" in v.evidence, v.evidence
    # Averaging the marker as a number would have said the opposite:
    assert np.mean(adax) < np.mean(adam)
    assert time_to_event(adam, adax).verdict == NOT_SUPPORTED
    assert time_to_event([100, 200, 150], [120, 180, 160]).verdict == INCONCLUSIVE
    assert describe_events([-1, -1]) == "all 2 longer than the run"


def test_divergence_and_noise_floor():
    assert divergence(0, 10, 0, 10) == pytest.approx(1.0)
    assert divergence(9, 10, 0, 10) < 0.001
    # Noise floor shrinks like 1/sqrt(n); infinite with fewer than 2 seeds.
    assert min_detectable_difference(1.0, 40) < min_detectable_difference(1.0, 10) / 1.9
    assert math.isinf(min_detectable_difference(1.0, 1))


def test_meets_target_agrees_with_one_sided_t_test():
    """Supported exactly when scipy's one-sided one-sample t-test rejects 'the mean misses the
    target' at alpha; not supported exactly when the sample mean misses it."""
    rng = np.random.default_rng(5)
    seen = set()
    for _ in range(300):
        v = rng.normal(rng.uniform(130, 170), rng.uniform(1, 20), size=int(rng.integers(2, 12)))
        out = meets_target(v, 150.0, higher_is_better=False, alpha=0.05, name="FD")
        p_one = stats.ttest_1samp(v, 150.0, alternative="less").pvalue
        if v.mean() > 150.0:
            assert out.verdict == NOT_SUPPORTED
        elif p_one < 0.05:
            assert out.verdict == SUPPORTED
        else:
            assert out.verdict == INCONCLUSIVE
        seen.add(out.verdict)
    assert seen == {SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE}


def test_meets_target_directions_and_edges():
    assert meets_target([9, 9, 10, 9], 8).verdict == SUPPORTED                  # higher is better
    assert meets_target([5, 6, 7], 8).verdict == NOT_SUPPORTED                 # mean misses
    assert meets_target([2, 14, 9], 8).verdict == INCONCLUSIVE                 # mean 8.3, wide interval
    assert meets_target([8.5], 8).verdict == INCONCLUSIVE                      # one run: no interval
    assert meets_target([140, np.nan, 120], 150, higher_is_better=False).verdict == NOT_SUPPORTED
    assert "misses" in meets_target([160, 170], 150, higher_is_better=False).evidence
    with pytest.raises(ValueError, match="target=inf"):
        meets_target([1, 2], float("inf"))
    with pytest.raises(ValueError, match="at least one"):
        meets_target([], 1.0)


def test_superiority_margin_first_rejects_a_significant_but_immaterial_gain():
    a = np.array([0.970, 0.975, 0.972, 0.974])
    b = a - np.array([0.004, 0.005, 0.0045, 0.0048])             # tiny, consistent gain
    assert superiority(a, b, paired=True, margin=0.02).verdict == SUPPORTED
    v = superiority(a, b, paired=True, margin=0.02, margin_first=True)
    assert v.verdict == NOT_SUPPORTED and "no gain that matters" in v.evidence
    big = superiority(a, a - 0.1 + np.array([0, 0.01, -0.01, 0.005]), paired=True, margin=0.02, margin_first=True)
    assert big.verdict == SUPPORTED                                # a gain beyond the margin still counts
