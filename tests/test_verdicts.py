"""kexue.verdicts: every outcome of every rule, against independent computations (scipy, brute force)."""
import itertools
import math

import numpy as np
import pytest
from scipy import stats

from kexue import verdicts as V
from kexue.verdicts import (ALPHA, CONTRADICTED, INCONCLUSIVE, SUPPORTED, Verdict, all_of, any_of, describe_events,
                            detectable_effect, difference, divergence, equivalence, first_match, holm, holm_levels,
                            interior_minimum_rule, meets_target, min_detectable_difference, permutation_p,
                            positive_control, ratio_interval, ratio_rule, replicate, rise_rule, same_either_way,
                            selected_gain_rule, sign_flip_p, superiority, superiority_family, time_to_event,
                            trend_rule, with_control, gate)

RNG = np.random.default_rng(0)
BASE = RNG.normal(0, 1, 12)          # shared seed effect: large spread across seeds


# --- differences, tests, power ---------------------------------------------------------------

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


def test_welch_difference_uses_welch_degrees_of_freedom():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 9.0])
    d = difference(a, b, paired=False)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert d.p == pytest.approx(ref.pvalue, rel=1e-9)
    assert d.dof == pytest.approx(ref.df, rel=1e-12)
    lo, hi = ref.confidence_interval(0.90)
    assert (d.low, d.high) == pytest.approx((lo, hi), rel=1e-9)


def test_detectable_effect_has_the_stated_power_by_the_noncentral_t():
    for n in (3, 5, 10):
        se, dof = 1.0 / math.sqrt(n), n - 1
        det = detectable_effect(se, dof)
        crit = stats.t.ppf(1 - ALPHA, dof)
        power = stats.nct.sf(crit, dof, det / se)
        assert 0.75 < power < 0.85                       # the usual (t + t) approximation of 80% power
    assert min_detectable_difference(1.0, 5) == pytest.approx(detectable_effect(1 / math.sqrt(5), 4))
    assert min_detectable_difference(1.0, 1) == math.inf


def test_holm_and_its_levels_match_hand_computation():
    p = [0.01, 0.04, 0.03, 0.20]
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.20])
    # levels: sorted 0.01 (0.05/4 pass), 0.03 (0.05/3 fail) -> the rest at 0.05/3
    assert holm_levels(p) == pytest.approx([0.0125, 0.05 / 3, 0.05 / 3, 0.05 / 3])


def test_sign_flip_and_permutation_p_match_brute_force():
    d = np.array([1.5, -0.5, 2.0, 0.7, 1.1])
    flips = [np.mean(np.array(s) * d) for s in itertools.product((1, -1), repeat=5)]
    g, l_ = sign_flip_p(d)
    assert g == pytest.approx(np.mean([f >= d.mean() - 1e-12 for f in flips]))
    assert l_ == pytest.approx(np.mean([f <= d.mean() + 1e-12 for f in flips]))
    a, b = np.array([3.0, 5.0, 4.0]), np.array([1.0, 2.0, 2.5, 0.5])
    pooled = np.concatenate([a, b])
    stat = [pooled[list(i)].mean() - np.delete(pooled, list(i)).mean() for i in itertools.combinations(range(7), 3)]
    g, l_ = permutation_p(a, b)
    obs = a.mean() - b.mean()
    assert g == pytest.approx(np.mean([s >= obs - 1e-12 for s in stat]))
    assert l_ == pytest.approx(np.mean([s <= obs + 1e-12 for s in stat]))
    assert g == pytest.approx(1 / 35)                    # the observed split is the most extreme


# --- superiority -----------------------------------------------------------------------------

def test_superiority_supported_p_is_scipys_one_sided_test():
    a = BASE + 0.5 + RNG.normal(0, 0.2, 12)
    v = superiority(a, BASE, paired=True, margin=0.1)
    assert v.verdict == SUPPORTED and v.reason == "significant"
    assert v.p_support == pytest.approx(stats.ttest_rel(a, BASE, alternative="greater").pvalue, rel=1e-9)
    d = difference(a, BASE, paired=True, level=0.90)
    assert (v.low, v.high, v.level) == pytest.approx((d.low, d.high, 0.90))


def test_superiority_other_way_inside_margin_and_underpowered():
    worse = BASE - 0.5 + RNG.normal(0, 0.2, 12)
    v = superiority(worse, BASE, paired=True)
    assert (v.verdict, v.reason) == (CONTRADICTED, "other_way")
    assert v.p_against == pytest.approx(stats.ttest_rel(worse, BASE, alternative="less").pvalue, rel=1e-9)
    tie = BASE + RNG.normal(0, 0.05, 12)                 # precise null: a 1.0 gain is ruled out
    v = superiority(tie, BASE, paired=True, margin=1.0)
    assert (v.verdict, v.reason) == (CONTRADICTED, "inside_margin") and v.detectable < 1.0
    noisy = BASE[:3] + np.array([2.5, -3.0, 0.8])         # three noisy pairs: cannot see a 1.0 gain
    v = superiority(noisy, BASE[:3], paired=True, margin=1.0)
    assert v.verdict == INCONCLUSIVE and v.reason == "underpowered" and v.detectable > 1.0


def test_superiority_underpowered_null_cannot_contradict_even_inside_the_margin():
    # interval inside the margin one-sidedly (high < margin), but the detectable effect exceeds the margin
    d = np.array([0.0, 0.25, -0.25])
    v = superiority(d, np.zeros(3), paired=True, margin=0.5)
    assert v.high < 0.5 < v.detectable
    assert (v.verdict, v.reason) == (INCONCLUSIVE, "underpowered")


def test_superiority_margin_first_rejects_a_significant_but_immaterial_gain():
    a = BASE + 0.05 + RNG.normal(0, 0.01, 12)
    assert superiority(a, BASE, paired=True, margin=0.5).verdict == SUPPORTED
    v = superiority(a, BASE, paired=True, margin=0.5, margin_first=True)
    assert (v.verdict, v.reason) == (CONTRADICTED, "inside_margin")


def test_integer_data_need_the_exact_test():
    v3 = superiority([3, 3, 3], [1, 1, 1], paired=True)      # zero spread: t says p = 0, no exact test can
    assert (v3.verdict, v3.reason) == (INCONCLUSIVE, "no_exact_test") and "p = 0.12" in v3.evidence
    v5 = superiority([3] * 5, [1] * 5, paired=True)
    assert v5.verdict == SUPPORTED and v5.p_support == pytest.approx(1 / 32)


def test_diverged_runs_are_ranked_worst_never_dropped():
    a = np.array([5.0, 6.0, 7.0, 8.0, 9.0, np.nan])
    b = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    v = superiority(a, b, paired=True)                   # the diverged a run loses its pair
    signed = np.array([3, 3, 3, 3, 3, -6.0])             # signed ranks: the diverged pair is the largest loss
    sums = [np.dot(s, signed) for s in itertools.product((1, -1), repeat=6)]
    assert v.p_support == pytest.approx(np.mean([x >= signed.sum() for x in sums]))
    assert v.verdict == INCONCLUSIVE                     # one loss of the largest rank: 10/64 > alpha
    assert "diverged runs ranked worst" in v.evidence
    # lower is better: a diverged run of the arm claimed better counts against it
    v = superiority([np.inf, 1, 1, 1], [2, 2, 2, 2], paired=True, higher_is_better=False)
    assert v.verdict == INCONCLUSIVE and v.reason == "no_exact_test"        # 2^-4 > alpha


# --- equivalence, targets ----------------------------------------------------------------------

def test_equivalence_outcomes_match_tost_by_hand():
    a = BASE + 0.05 + RNG.normal(0, 0.1, 12)
    v = equivalence(a, BASE, margin=0.5, paired=True)
    d = a - BASE
    se = d.std(ddof=1) / math.sqrt(12)
    p_tost = max(stats.t.sf((d.mean() + 0.5) / se, 11), stats.t.cdf((d.mean() - 0.5) / se, 11))
    assert (v.verdict, v.reason) == (SUPPORTED, "equivalent") and v.p_support == pytest.approx(p_tost, rel=1e-9)
    far = equivalence(BASE + 2.0 + RNG.normal(0, 0.1, 12), BASE, margin=0.5, paired=True)
    assert (far.verdict, far.reason) == (CONTRADICTED, "outside_margin")
    wide = equivalence(BASE[:3] + RNG.normal(0, 2.0, 3), BASE[:3], margin=0.5, paired=True)
    assert (wide.verdict, wide.reason) == (INCONCLUSIVE, "underpowered")
    assert equivalence([1.0], [1.0], margin=1.0, paired=True).reason == "too_few_runs"
    with pytest.raises(ValueError, match="margin"):
        equivalence(BASE, BASE, margin=0.0, paired=True)


def test_unpaired_tost_uses_welch_degrees_of_freedom():
    a, b = np.array([0.1, 0.3, -0.2, 0.4, 0.0]), np.array([0.0, 0.9, -0.8])
    v = equivalence(a, b, margin=2.0, paired=False)
    ref = stats.ttest_ind(a, b, equal_var=False)
    se = (a.mean() - b.mean()) / ref.statistic
    p_lo = stats.t.sf((a.mean() - b.mean() + 2.0) / se, ref.df)
    p_hi = stats.t.cdf((a.mean() - b.mean() - 2.0) / se, ref.df)
    assert v.p_support == pytest.approx(max(p_lo, p_hi), rel=1e-9)


def test_meets_target_is_decided_by_the_interval_on_either_side():
    v = [140.5, 150.2, 145.1, 160.3, 148.7]
    res = stats.ttest_1samp(v, 170.0, alternative="less")
    hit = meets_target(v, 170.0, higher_is_better=False)
    assert (hit.verdict, hit.reason) == (SUPPORTED, "clears_target") and hit.p_support == pytest.approx(res.pvalue)
    miss = meets_target(v, 120.0, higher_is_better=False)
    assert (miss.verdict, miss.reason) == (CONTRADICTED, "misses_target")
    edge = meets_target([7, 8, 9], 8)                     # mean on the target: cannot be decided
    assert (edge.verdict, edge.reason) == (INCONCLUSIVE, "straddles")
    near_miss = meets_target([7.5, 8.2, 7.9], 8)          # mean misses, interval crosses: not contradicted
    assert near_miss.verdict == INCONCLUSIVE
    div = meets_target([1.0, np.nan, 2.0], 0.5)
    assert "diverged" in div.evidence and div.verdict == INCONCLUSIVE
    with pytest.raises(ValueError, match="target"):
        meets_target([1.0], float("nan"))


# --- combining parts ---------------------------------------------------------------------------

def _v(word, reason, p_support=float("nan"), p_against=float("nan"), ev="x"):
    return Verdict(word, reason, ev, p_support, p_against)


def test_all_of_uses_holm_against_the_claim():
    s = _v(SUPPORTED, "significant", 0.01, 0.99, "s")
    weak = [_v(CONTRADICTED, "inside_margin", 0.9, 0.03), _v(INCONCLUSIVE, "straddles", 0.5, 0.2),
            _v(INCONCLUSIVE, "straddles", 0.5, 0.3)]
    v = all_of(weak)                                      # Holm: 3 x 0.03 = 0.09 >= 0.05
    assert v.verdict == INCONCLUSIVE and v.p_against == pytest.approx(0.09)
    strong = [_v(CONTRADICTED, "other_way", 0.99, 0.01), *weak[1:]]
    assert all_of(strong).verdict == CONTRADICTED and all_of(strong).reason == "a_part_against"
    assert all_of([s, s]).reason == "every_part"
    n = _v(CONTRADICTED, "exceeds_tolerance", ev="n")    # an identity that fails: p against 0
    assert all_of([s, n], label="both", show_parts=True).evidence.startswith("both: s → supported; n → contradicted")
    assert all_of([s, _v(INCONCLUSIVE, "underpowered", 0.3, 0.001)]).reason == "underpowered"
    with pytest.raises(ValueError):
        all_of([])


def test_any_of_needs_one_part_and_is_contradicted_only_by_all():
    sup, con, inc = (_v(SUPPORTED, "significant", 0.01), _v(CONTRADICTED, "other_way", p_against=0.01),
                     _v(INCONCLUSIVE, "straddles"))
    assert any_of({"a": inc, "b": sup, "c": con}).verdict == SUPPORTED
    assert "holds at b" in any_of({"a": inc, "b": sup}).evidence
    assert any_of({"a": inc, "c": con}).verdict == INCONCLUSIVE          # one part against is not all
    assert any_of({"a": con, "c": con}).reason == "every_part_against"
    with pytest.raises(ValueError, match="at least one"):
        any_of({})


def test_same_either_way_needs_every_measure_to_agree():
    s, c = _v(SUPPORTED, "significant", ev="s"), _v(CONTRADICTED, "other_way", ev="c")
    both = same_either_way([s, c], label="smoother")
    assert (both.verdict, both.reason) == (INCONCLUSIVE, "measures_disagree")
    assert both.evidence == "smoother: s → supported; c → contradicted; the measures disagree"
    assert same_either_way([s, s]).verdict == SUPPORTED


def test_superiority_family_holm_in_both_directions_and_interval_at_holms_level():
    a1 = BASE + 1.0 + RNG.normal(0, 0.2, 12)
    noise = RNG.normal(0, 0.2, 12)
    a2 = BASE + noise - noise.mean()                     # no gain at all
    out = superiority_family({"big": (a1, BASE), "tiny": (a2, BASE)}, paired=True, margins={"tiny": 0.8})
    raw = [stats.ttest_rel(a, BASE, alternative="greater").pvalue for a in (a1, a2)]
    assert out["big"].p_support == pytest.approx(holm(raw)[0])
    assert out["big"].verdict == SUPPORTED
    assert out["big"].level == pytest.approx(1 - 2 * ALPHA / 2)          # first step of Holm: alpha / 2
    assert out["tiny"].verdict == CONTRADICTED and out["tiny"].reason == "inside_margin"
    with pytest.raises(ValueError, match="margin"):
        superiority_family({"a": (a1, BASE)}, paired=True, margins={"b": 1.0})


# --- ranks, events -------------------------------------------------------------------------------

def test_time_to_event_is_exact_and_refuses_where_no_exact_test_can_decide():
    v = time_to_event([5, 6, 7], [1, 2, 3])               # unpaired 3 vs 3: the smallest p is 1/20
    assert (v.verdict, v.reason) == (INCONCLUSIVE, "no_exact_test")
    assert v.p_support == pytest.approx(1 / 20)
    paired = time_to_event([-1, 900, 800, -1, 700, 950], [10, 20, 30, 40, 50, 60], paired=True)
    assert paired.verdict == SUPPORTED and paired.p_support == pytest.approx(1 / 64)
    assert "longer than the run" in paired.evidence
    other = time_to_event([10, 20, 30, 40, 50, 60], [-1, 900, 800, -1, 700, 950], paired=True)
    assert (other.verdict, other.reason) == (CONTRADICTED, "other_way")


def test_describe_events_and_divergence():
    assert describe_events([100, -1, 300]) == "median 200 (n = 2); 1/3 longer than the run"
    assert divergence(5, 10, 0, 10) == pytest.approx(stats.fisher_exact([[5, 5], [0, 10]]).pvalue)


# --- rules moved here from the technique modules -------------------------------------------------

def test_first_match_is_a_paired_non_inferiority_bound():
    ref = [20.0, 22.0, 21.0, 23.0]
    cands = {3: [40.0, 41.0, 39.0, 42.0], 5: [21.0, 22.5, 21.5, 23.5], 9: [20.0, 22.0, 21.0, 23.0]}
    nfe, bounds = first_match(cands, ref, margin=1.0)
    by_hand = 0.625 + stats.t.ppf(0.95, 3) * 0.25 / 2     # 5 NFE: differences 1, .5, .5, .5
    assert bounds[5] == pytest.approx(by_hand, rel=1e-12) and by_hand < 1.0
    assert nfe == 5 and bounds[3] > 15 and bounds[9] == 0.0
    assert first_match({3: cands[3]}, ref, margin=1.0)[0] is None
    with pytest.raises(ValueError, match="margin"):
        first_match(cands, ref, margin=-1.0)


def test_trend_rule_outcomes_against_scipy():
    x = [3, 5, 7, 9, 13, 19, 35]
    y = [0.5, 0.6, 0.6, 0.7, 0.8, 0.9, 1.0]
    up = trend_rule(x, y)
    assert up.verdict == SUPPORTED and up.p_support == pytest.approx(stats.kendalltau(x, y, alternative="greater").pvalue)
    falls = trend_rule(x, y[::-1])
    assert (falls.verdict, falls.reason) == (CONTRADICTED, "other_way")
    assert trend_rule(x, y[::-1], increasing=False).verdict == SUPPORTED
    assert trend_rule(x, [0.7] * 7).verdict == CONTRADICTED                         # never changes
    assert trend_rule(x, [0.7, 0.5, 0.9, 0.6, 0.8, 0.5, 0.7]).verdict == INCONCLUSIVE
    with pytest.raises(ValueError, match="at least 3"):
        trend_rule([1, 2], [1, 2])


def test_interior_minimum_rule_outcomes():
    fd = {1.0: [30.0, 31.0, 29.5, 30.5], 0.8: [20.0, 21.5, 19.0, 20.0], 0.5: [40.0, 42.0, 41.0, 39.0]}
    assert interior_minimum_rule(fd, 0.8).verdict == SUPPORTED
    assert interior_minimum_rule(fd, 1.0).verdict == INCONCLUSIVE     # an end picked, but 0.8 is lower there
    end_low = {1.0: [10.0, 11.0, 9.5, 10.5], 0.8: [20.0, 21.5, 19.0, 20.0], 0.5: [40.0, 42.0, 41.0, 39.0]}
    v = interior_minimum_rule(end_low, 1.0)                                          # the end is clearly lowest
    assert (v.verdict, v.reason) == (CONTRADICTED, "other_way") and "no interior minimum" in v.evidence
    flat = {1.0: [20.0, 21.0, 19.0, 20.5], 0.8: [20.5, 20.0, 19.5, 20.0], 0.5: [40.0, 42.0, 41.0, 39.0]}
    assert interior_minimum_rule(flat, 0.8).verdict == INCONCLUSIVE                  # no better than rho 1
    with pytest.raises(ValueError, match="best"):
        interior_minimum_rule(fd, 0.7)


def test_selected_gain_rule_picks_on_one_set_and_judges_on_the_others():
    fd = {1.0: [30.0, 30.0, 31.0, 29.0, 30.5], 0.9: [25.0, 26.0, 25.5, 24.0, 25.0], 0.8: [26.0, 20.0, 20.0, 20.0, 20.0]}
    best, v = selected_gain_rule(fd, 1.0, select=[0], judge=[1, 2, 3, 4])
    assert best == 0.9 and v.verdict == SUPPORTED and "0.9" in v.evidence
    best, v = selected_gain_rule({1.0: [1.0, 2.0, 3.0, 2.5], 0.9: [2.0, 4.0, 5.1, 4.4]}, 1.0, select=[0],
                                 judge=[1, 2, 3])
    assert best == 0.9 and v.verdict == CONTRADICTED and "prefers the reference" in v.evidence
    close = {1.0: [30.0, 30.0, 31.0, 29.0, 30.5], 0.9: [29.0, 30.3, 30.8, 29.2, 30.4]}
    assert selected_gain_rule(close, 1.0, [0], [1, 2, 3, 4], margin=2.0)[1].reason == "inside_margin"
    with pytest.raises(ValueError, match="disjoint"):
        selected_gain_rule(fd, 1.0, select=[0], judge=[0, 1])


def test_rise_rule_is_superiority_with_the_smallest_rise_as_margin():
    low = [1.0, 1.0, 1.0, 1.0]
    assert rise_rule([1.1, 1.2, 1.1, 1.2], [0.8, 0.9, 0.8, 0.9], min_rise=0.1).verdict == SUPPORTED
    fall = rise_rule([0.7, 0.75, 0.7, 0.72], low, min_rise=0.1)
    assert (fall.verdict, fall.reason) == (CONTRADICTED, "other_way")
    assert rise_rule([1.3, 0.8, 1.2, 0.7], low, min_rise=0.1).verdict == INCONCLUSIVE
    with pytest.raises(ValueError, match="min_rise"):
        rise_rule(low, low, min_rise=0)


def test_ratio_interval_is_a_t_interval_on_logs():
    r = [1.21, 1.30, 1.18, 1.25, 1.40, 1.22]
    logs = np.log(r)
    lo, hi = stats.t.interval(0.90, len(r) - 1, loc=logs.mean(), scale=stats.sem(logs))
    assert ratio_interval(r) == pytest.approx((np.exp(logs.mean()), np.exp(lo), np.exp(hi), 6), rel=1e-12)
    assert ratio_interval([1.7]) == (1.7, 1.7, 1.7, 1)                  # an exact count: a point


def test_ratio_rule_band_and_direction():
    assert ratio_rule([1.21, 1.30, 1.18, 1.25, 1.40, 1.22], band=0.05).verdict == SUPPORTED
    assert ratio_rule([0.80, 0.82, 0.79, 0.81], band=0.05).reason == "other_way"
    assert ratio_rule([1.01, 0.99, 1.00, 1.02, 0.995], band=0.05).reason == "inside_margin"
    assert ratio_rule([1.3, 0.8, 1.1, 0.9], band=0.05).verdict == INCONCLUSIVE
    assert ratio_rule([1.76], band=0.05).verdict == SUPPORTED
    assert ratio_rule([1.0], band=0.05).verdict == CONTRADICTED


# --- controls, gates, replication, the Verdict object --------------------------------------------

def test_a_failed_positive_control_stops_a_contradiction_not_a_finding():
    passed = positive_control(BASE + 2.0 + RNG.normal(0, 0.1, 12), BASE, paired=True)
    failed = positive_control(BASE + RNG.normal(0, 0.1, 12), BASE, paired=True)
    assert passed.verdict == SUPPORTED and failed.verdict != SUPPORTED
    against = _v(CONTRADICTED, "inside_margin", p_against=0.01)
    assert with_control(against, passed) is against
    capped = with_control(against, failed)
    assert (capped.verdict, capped.reason) == (INCONCLUSIVE, "testbed_cannot_discriminate")
    found = _v(SUPPORTED, "significant", 0.01)
    assert with_control(found, failed) is found
    same = _v(SUPPORTED, "equivalent", 0.01)                # a blind testbed makes everything look equivalent
    assert with_control(same, failed, equivalence=True).reason == "testbed_cannot_discriminate"
    assert with_control(same, passed, equivalence=True) is same


def test_gate_and_replicate():
    pre_ok, pre_no = _v(SUPPORTED, "clears_target", ev="learned"), _v(INCONCLUSIVE, "straddles", ev="not learned")
    claim = _v(CONTRADICTED, "other_way", ev="claim")
    assert gate(claim, pre_ok, "x").verdict == CONTRADICTED
    g = gate(claim, pre_no, "not yet a generator")
    assert (g.verdict, g.reason) == (INCONCLUSIVE, "gated") and "not yet a generator" in g.evidence
    m = gate(superiority([1.0, 2.0, 3.5], [0.0, 1.0, 2.0], paired=True, margin=0.3), pre_no, "x")
    assert m.margin == 0.3 and m.n == 3                    # the gated verdict keeps its numbers
    assert replicate(SUPPORTED, "significant", SUPPORTED) == (SUPPORTED, "significant")
    assert replicate(SUPPORTED, "significant", None) == (SUPPORTED, "significant")
    assert replicate(SUPPORTED, "significant", INCONCLUSIVE) == (INCONCLUSIVE, "unstable_on_rerun")


def test_verdict_words_and_reasons_must_agree():
    with pytest.raises(ValueError, match="verdict"):
        Verdict("not supported", "other_way", "x")
    with pytest.raises(ValueError, match="belongs to"):
        Verdict(SUPPORTED, "other_way", "x")
    with pytest.raises(ValueError, match="reason"):
        Verdict(SUPPORTED, "because", "x")
    assert set(V.VERDICTS) == {r[0] for r in V.REASONS.values()}


# --- calibration: the published operating characteristics ------------------------------------------

def test_every_rule_keeps_its_error_rates_at_alpha():
    table = V.operating_characteristics(ns=(3, 5, 10), reps=2000, seed=1)
    ok, text = V.calibration_ok(table, reps=2000)
    assert ok, text
    assert set(table["n"]) == {3, 5, 10} and table["rule"].nunique() >= 8
    # the simulation has power where it should: a 1-sd margin is ruled out often at n = 10 with no gain
    row = table[(table.rule == "superiority (margin 1 sd)") & (table.truth == "no difference") & (table.n == 10)]
    assert float(row["P(contradicted)"].iloc[0]) > 0.5


def test_calibration_check_flags_a_miscalibrated_row():
    import pandas as pd
    bad = pd.DataFrame([{"rule": "r", "truth": "t", "n": 3, "error rate": 0.2}])
    ok, text = V.calibration_ok(bad, reps=4000)
    assert not ok and "r at n = 3" in text


def test_committed_calibration_table_matches_the_code():
    import pandas as pd
    from kexue.config import ROOT
    committed = pd.read_csv(ROOT / "reports" / "calibration" / "calibration.csv")
    fresh = V.operating_characteristics()
    assert list(committed["rule"]) == list(fresh["rule"])
    assert np.allclose(committed["error rate"], fresh["error rate"], atol=1e-4)


def test_meets_target_on_counts_needs_the_exact_test():
    v3 = meets_target([9, 9, 9], 8)                       # zero spread above the target, but 3 runs
    assert (v3.verdict, v3.reason) == (INCONCLUSIVE, "no_exact_test")
    v5 = meets_target([9, 10, 9, 9, 10], 8)
    assert v5.verdict == SUPPORTED and v5.p_support == pytest.approx(max(1 / 32, stats.ttest_1samp(
        [9, 10, 9, 9, 10], 8, alternative="greater").pvalue))


# ---------------------------------------------------------------- decisions on an estimated difference

def test_rules_on_an_estimated_difference_match_the_seed_rules():
    """superiority_of / equivalence_of / meets_target_of on `difference(a, b)` decide exactly as the rules
    that take the runs themselves (same words, reasons, intervals and p-values)."""
    from kexue import verdicts
    from kexue.verdicts import difference, equivalence_of, meets_target_of, superiority_of
    rng = np.random.default_rng(3)
    for shift in (-0.6, -0.05, 0.0, 0.04, 0.3, 1.5):
        a = rng.normal(shift, 0.2, 5)
        b = rng.normal(0.0, 0.2, 5)
        d = difference(a, b, paired=True)
        for kw in ({}, {"margin": 0.1}, {"margin": 0.1, "margin_first": True}):
            v1, v2 = verdicts.superiority(a, b, paired=True, **kw), superiority_of(d, **kw)
            assert (v1.verdict, v1.reason) == (v2.verdict, v2.reason), (shift, kw)
            assert np.allclose([v1.low, v1.high, v1.p_support, v1.p_against], [v2.low, v2.high, v2.p_support, v2.p_against])
        e1, e2 = verdicts.equivalence(a, b, 0.25, paired=True), equivalence_of(d, 0.25)
        assert (e1.verdict, e1.reason) == (e2.verdict, e2.reason)
        assert np.allclose([e1.low, e1.high, e1.p_support], [e2.low, e2.high, e2.p_support])
        t1 = verdicts.meets_target(a, 0.1)
        t2 = meets_target_of(difference(a, np.zeros_like(a), paired=True), 0.1)
        assert (t1.verdict, t1.reason) == (t2.verdict, t2.reason)
        assert np.allclose([t1.low, t1.high], [t2.low, t2.high])
    with pytest.raises(ValueError, match="d.level"):
        superiority_of(difference(a, b, paired=True, level=0.95))


def test_clustered_difference_limits():
    """Two exact limits: values constant over queries leave only the seed part (the paired t over seeds);
    one seed leaves only the cluster bootstrap, whose se for one query per cluster is the iid sd/sqrt(Q)."""
    from kexue.verdicts import clustered_difference, difference
    m = np.array([0.3, 0.1, 0.5, 0.2])
    x = np.repeat(m[:, None], 40, axis=1)
    d, ref = clustered_difference(x, np.arange(40) % 8), difference(m, np.zeros(4), paired=True)
    assert d.estimate == pytest.approx(ref.estimate) and d.se == pytest.approx(ref.se) and d.dof == pytest.approx(3)
    assert (d.low, d.high) == pytest.approx((ref.low, ref.high))
    v = np.random.default_rng(0).normal(size=400)
    one = clustered_difference(v[None], np.arange(400), reps=20000)
    assert one.se == pytest.approx(v.std(ddof=0) / np.sqrt(400), rel=0.03) and one.dof == pytest.approx(399)
    # queries of one cluster that agree count once: 8 clusters of 50 equal values = 8 values
    cl = np.repeat(np.arange(8), 50)
    grouped = clustered_difference(np.repeat(v[:8], 50)[None], cl, reps=20000)
    assert grouped.se == pytest.approx(v[:8].std(ddof=0) / np.sqrt(8), rel=0.05)
    for bad in (np.full((2, 3), np.nan), np.zeros((2, 5))):
        with pytest.raises(ValueError, match="x="):
            clustered_difference(bad, np.arange(4))
    with pytest.raises(ValueError, match="clusters="):
        clustered_difference(np.zeros((2, 4)), np.zeros(4))


def test_clustered_difference_covers_the_truth():
    """Seeds and books both random: the 90% interval covers the true mean about 90% of the time (a naive
    interval over seeds alone, which ignores the test sample, covers far less)."""
    from kexue.verdicts import clustered_difference, difference
    rng = np.random.default_rng(1)
    S, C, per = 3, 10, 30
    cover = naive = 0
    reps = 300
    for _ in range(reps):
        book = rng.normal(0, 1.0, C)                              # test-sample effect of each book
        seed_eff = rng.normal(0, 0.2, S)                          # training noise
        x = seed_eff[:, None] + np.repeat(book, per)[None] + rng.normal(0, 0.5, (S, C * per))
        d = clustered_difference(x, np.repeat(np.arange(C), per), reps=300, seed=int(rng.integers(1 << 30)))
        cover += d.low <= 0 <= d.high
        n = difference(x.mean(1), np.zeros(S), paired=True)
        naive += n.low <= 0 <= n.high
    assert 0.84 <= cover / reps <= 0.97, cover / reps
    assert naive / reps < 0.7, naive / reps


def test_clustered_difference_counts_unequal_clusters_as_fewer():
    """Kish's effective number of clusters: one cluster of 90 queries and ten of 1 are about 1.2 clusters' worth."""
    from kexue.verdicts import clustered_difference
    cl = np.array([0] * 90 + list(range(1, 11)))
    d = clustered_difference(np.random.default_rng(0).normal(size=(1, 100)), cl)
    n_eff = 100 ** 2 / (90 ** 2 + 10)
    assert d.dof == pytest.approx(max(n_eff - 1, 1.0)) and "1.2 effective" in d.method
    equal = clustered_difference(np.random.default_rng(0).normal(size=(1, 100)), np.arange(100) % 10)
    assert equal.dof == pytest.approx(9)
