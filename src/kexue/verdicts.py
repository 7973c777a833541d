"""Verdict rules: the statistics every chapter's claims table rests on (DESIGN.md, "Verdicts").

A claim's verdict is one of three words, and it always carries a machine-readable *reason*:

* **supported** — the data are significantly on the claim's side (`significant`, `equivalent`,
  `clears_target`, `within_tolerance`, `every_part`, `some_part`);
* **contradicted** — the data go against the claim: a significant effect the other way
  (`other_way`); for a claimed gain, the whole interval below the smallest gain that matters
  (`inside_margin`); for a claimed equivalence, the whole interval outside the margin
  (`outside_margin`); a target missed with the whole interval on the wrong side (`misses_target`);
  a measured identity off by more than its tolerance (`exceeds_tolerance`); a part of a claim
  that needs every part (`a_part_against`), or every part of one that needs any (`every_part_against`);
* **inconclusive at this scale** — neither: the interval `straddles` what would decide it;
  the experiment is `underpowered` (the smallest effect it could detect is larger than the effect
  the claim is about, so a null result there says nothing); the testbed failed its positive
  control (`testbed_cannot_discriminate`); the verdict changed on the rerun with other seeds
  (`unstable_on_rerun`); `too_few_runs`; `no_exact_test` (no exact test at this n can reach α);
  `gated` (a precondition such as "the model has learned to generate" failed);
  `measures_disagree`; `parts_undecided`.

One level for every rule: `ALPHA` = 0.05 is the one-sided error of each decision in the
direction it concludes. A decision is therefore "the two-sided (1 − 2α) = 90 % interval lies
wholly on one side", and that is the interval printed (adjusted, when the claim is one of a
family, to the level the family's correction used). Under each rule's null (truth on the
margin or the target), false *supported* and false *contradicted* are each at most α; the
`operating_characteristics` simulation checks this and its table is on the front page.

The decision cores (`_decide_gain`, `_decide_equivalence`, `_decide_target`, `_holm_any`, the
exact permutation tests) take arrays, so the scalar rules the chapters call and the calibration
that simulates thousands of replicates run the same code.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import stats

from .fmt import fmt as _fmt

ALPHA = 0.05              # one-sided error of every decision (two-sided 90% intervals)
POWER = 0.8               # power at which the detectable effect is quoted

VERDICTS = ("supported", "contradicted", "inconclusive at this scale")
SUPPORTED, CONTRADICTED, INCONCLUSIVE = VERDICTS

REASONS = {
    # supported
    "significant": (SUPPORTED, "the effect is significant in the claimed direction"),
    "equivalent": (SUPPORTED, "the whole interval lies inside the equivalence margin"),
    "clears_target": (SUPPORTED, "the whole interval is on the good side of the target"),
    "within_tolerance": (SUPPORTED, "every measured discrepancy is within its tolerance"),
    "every_part": (SUPPORTED, "every part of the claim is supported"),
    "some_part": (SUPPORTED, "a part is supported, after the family's correction"),
    # contradicted
    "other_way": (CONTRADICTED, "the effect is significant in the opposite direction"),
    "inside_margin": (CONTRADICTED, "the whole interval lies below the smallest gain that matters"),
    "outside_margin": (CONTRADICTED, "the whole interval lies outside the equivalence margin"),
    "misses_target": (CONTRADICTED, "the whole interval is on the wrong side of the target"),
    "exceeds_tolerance": (CONTRADICTED, "a measured discrepancy exceeds its tolerance"),
    "a_part_against": (CONTRADICTED, "a part is contradicted, after Holm's correction over the parts"),
    "every_part_against": (CONTRADICTED, "every part is contradicted"),
    # inconclusive
    "straddles": (INCONCLUSIVE, "the interval straddles what would decide the claim"),
    "underpowered": (INCONCLUSIVE, "the smallest effect this experiment could detect is larger than "
                                   "the effect the claim is about"),
    "testbed_cannot_discriminate": (INCONCLUSIVE, "the testbed failed its positive control"),
    "unstable_on_rerun": (INCONCLUSIVE, "the verdict differs on the rerun with disjoint seeds"),
    "too_few_runs": (INCONCLUSIVE, "too few usable runs for an interval"),
    "no_exact_test": (INCONCLUSIVE, "no exact test at this n can reach the significance level"),
    "gated": (INCONCLUSIVE, "a precondition of the claim failed"),
    "measures_disagree": (INCONCLUSIVE, "defensible measures give different verdicts"),
    "parts_undecided": (INCONCLUSIVE, "some part is undecided"),
}
_CODE = {SUPPORTED: 1, CONTRADICTED: -1, INCONCLUSIVE: 0}


def _check(name: str, value, ok: bool, why: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r}: {why}")


# --------------------------------------------------------------------------------------------
# The verdict object
# --------------------------------------------------------------------------------------------

@dataclass
class Verdict:
    """A verdict word, its reason, and what a reader needs to weigh it.

    `p_support` / `p_against`: one-sided p-values of the test that would support / contradict the
    claim (NaN where no such test applies); `low`, `high`, `level`: the interval the decision used;
    `margin`: the margin or target in absolute units; `detectable`: the smallest effect this
    experiment detects with 80% power at its α and n (NaN where not defined).
    """
    verdict: str
    reason: str
    evidence: str
    p_support: float = float("nan")
    p_against: float = float("nan")
    n: int | None = None
    estimate: float = float("nan")
    low: float = float("nan")
    high: float = float("nan")
    level: float = float("nan")
    margin: float | None = None
    detectable: float = float("nan")
    parts: list = field(default_factory=list)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r}: must be one of {VERDICTS}")
        if self.reason not in REASONS:
            raise ValueError(f"reason {self.reason!r}: must be one of {sorted(REASONS)}")
        if REASONS[self.reason][0] != self.verdict:
            raise ValueError(f"reason {self.reason!r} belongs to {REASONS[self.reason][0]!r}, not {self.verdict!r}")

    @property
    def p(self) -> float:
        """The p-value of the decisive direction (support unless contradicted)."""
        return self.p_against if self.verdict == CONTRADICTED else self.p_support

    def interval_text(self, sig: int = 3) -> str:
        if not (math.isfinite(self.low) or math.isfinite(self.high)):
            return ""
        return f"[{_fmt(self.low, sig)}, {_fmt(self.high, sig)}] ({100 * self.level:.1f}%)".replace(".0%", "%")

    def labelled(self, label: str) -> "Verdict":
        """The same verdict with `label: ` before its evidence."""
        import dataclasses
        return dataclasses.replace(self, evidence=f"{label}: {self.evidence}")

    def inconclusive(self, reason: str, note: str) -> "Verdict":
        """The same evidence, demoted to inconclusive for `reason` (keeps the numbers)."""
        import dataclasses
        return dataclasses.replace(self, verdict=INCONCLUSIVE, reason=reason,
                                   evidence=f"{self.evidence}; {note}")


# --------------------------------------------------------------------------------------------
# Differences, intervals, power
# --------------------------------------------------------------------------------------------

@dataclass
class Difference:
    """a - b over seeds: estimate, (1 - 2 alpha) interval, standard error, degrees of freedom."""
    estimate: float
    low: float
    high: float
    p: float                      # two-sided t-test p
    n: int                        # pairs (paired) or min(n_a, n_b)
    paired: bool
    se: float = float("inf")
    dof: float = float("nan")
    diverged_a: int = 0
    diverged_b: int = 0
    level: float = 1 - 2 * ALPHA
    method: str = ""              # how the interval was made, when not a t-test over seeds

    def text(self, unit: str = "", sig: int = 3) -> str:
        kind = self.method or ("paired" if self.paired else "Welch")
        return (f"difference {_fmt(self.estimate, sig)}{unit} [{_fmt(self.low, sig)}, {_fmt(self.high, sig)}]"
                f" ({100 * self.level:.1f}% CI, {kind}, n = {self.n})").replace(".0% CI", "% CI")


def finite_split(values) -> tuple[np.ndarray, np.ndarray]:
    """(finite mask, values as float array): a non-finite value marks a diverged run."""
    v = np.asarray(values, dtype=float)
    return np.isfinite(v), v


def difference(a, b, paired: bool, level: float = 1 - 2 * ALPHA) -> Difference:
    """Mean difference a - b with a t interval at `level` (paired, or Welch with Welch's degrees of
    freedom). Non-finite values are not used here (the rules rank diverged runs instead, see
    `superiority`); fewer than 2 usable values give an infinite interval and p = NaN."""
    ok_a, a = finite_split(a)
    ok_b, b = finite_split(b)
    if paired:
        if len(a) != len(b):
            raise ValueError(f"paired comparison needs equal lengths, got {len(a)} and {len(b)}")
        keep = ok_a & ok_b
        d = a[keep] - b[keep]
        n = len(d)
        est = float(d.mean()) if n else float("nan")
        se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
        dof = float(n - 1)
    else:
        a, b = a[ok_a], b[ok_b]
        n = min(len(a), len(b))
        est = float(a.mean() - b.mean()) if n else float("nan")
        va = a.var(ddof=1) / len(a) if len(a) > 1 else float("inf")
        vb = b.var(ddof=1) / len(b) if len(b) > 1 else float("inf")
        se = float(np.sqrt(va + vb))
        dof = float(_welch_dof(va, vb, len(a), len(b))) if n > 1 else float("nan")
    div_a, div_b = int((~ok_a).sum()), int((~ok_b).sum())
    if not np.isfinite(est) or not np.isfinite(se):
        return Difference(est, -np.inf, np.inf, float("nan"), n, paired, float("inf"), dof, div_a, div_b, level)
    if se == 0:
        return Difference(est, est, est, 1.0 if est == 0 else 0.0, n, paired, 0.0, dof, div_a, div_b, level)
    q = stats.t.ppf(0.5 + level / 2, dof)
    p = float(2 * stats.t.sf(abs(est / se), dof))
    return Difference(est, est - q * se, est + q * se, p, n, paired, se, dof, div_a, div_b, level)


def clustered_difference(x, clusters, reps: int = 2000, seed: int = 0, level: float = 1 - 2 * ALPHA) -> Difference:
    """Mean of per-query values `x` [S seeds, Q queries] (a paired difference of two arms, or one arm's
    score) with an interval that holds two sources of noise: training (the seeds) and the test sample
    (queries clustered in `clusters` [Q], e.g. their books, which the experiment could have drawn otherwise).

    se² = var(seed means)/S  +  var over a bootstrap of whole clusters of the seed-averaged values;
    the t interval uses Welch-Satterthwaite degrees of freedom from S-1 and C-1 (C clusters). With one
    seed only the cluster part is used. Clusters of unequal size count as fewer: the cluster part's degrees
    of freedom are Kish's effective number of clusters minus one, (Σ n_c)² / Σ n_c² − 1 (one book holding most
    queries leaves about one cluster's worth of information). The seed part also holds a little test-sample
    noise, so the sum errs on the wide side."""
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[None]
    clusters = np.asarray(clusters)
    _check("x", x.shape, x.ndim == 2 and x.shape[1] == len(clusters) and x.size > 0 and np.isfinite(x).all(),
           f"must be finite [seeds, queries] with queries = len(clusters) = {len(clusters)}")
    _check("reps", reps, reps >= 100, "must be >= 100")
    S = x.shape[0]
    labels, cid = np.unique(clusters, return_inverse=True)
    C = len(labels)
    _check("clusters", C, C >= 2, "need at least 2 distinct clusters")
    est = float(x.mean())
    v_seed = float(x.mean(1).var(ddof=1) / S) if S > 1 else 0.0
    per_q = x.mean(0)
    sums, sizes = np.bincount(cid, per_q, C), np.bincount(cid, minlength=C).astype(float)
    pick = np.random.default_rng(seed).integers(0, C, size=(reps, C))               # clusters drawn with replacement
    boot = sums[pick].sum(1) / sizes[pick].sum(1)
    v_test = float(boot.var(ddof=1))
    se = math.sqrt(v_seed + v_test)
    c_eff = float(sizes.sum() ** 2 / (sizes ** 2).sum())                            # Kish: C for equal sizes
    dof_test = max(c_eff - 1.0, 1.0)
    dof = float(_welch_dof(v_seed, v_test, S, dof_test + 1)) if S > 1 else dof_test
    method = (f"{S} seed{'s' if S > 1 else ''} × test sample clustered by {C} groups, {c_eff:.1f} effective "
              f"({reps} bootstrap draws)")
    if se == 0:
        return Difference(est, est, est, 1.0 if est == 0 else 0.0, S, True, 0.0, dof, level=level, method=method)
    q = stats.t.ppf(0.5 + level / 2, dof)
    p = float(2 * stats.t.sf(abs(est / se), dof))
    return Difference(est, est - q * se, est + q * se, p, S, True, se, dof, level=level, method=method)


def _welch_dof(va, vb, na, nb):
    """Welch-Satterthwaite degrees of freedom from the two squared standard errors."""
    va, vb = np.asarray(va, dtype=float), np.asarray(vb, dtype=float)
    num = (va + vb) ** 2
    den = va ** 2 / (na - 1) + vb ** 2 / (nb - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), min(na, nb) - 1)


def min_detectable_difference(spread: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true paired difference a one-sided test at `alpha` with `n` seeds detects with
    `power`, given the per-seed sd of the differences: the noise floor a report quotes."""
    if n < 2 or not spread >= 0:
        return float("inf")
    return detectable_effect(spread / math.sqrt(n), n - 1, alpha, power)


def detectable_effect(se, dof, alpha: float = ALPHA, power: float = POWER):
    """(t_{1-alpha} + t_{power}) * se: the true effect a one-sided t-test at `alpha` finds with `power`."""
    se, dof = np.asarray(se, dtype=float), np.asarray(dof, dtype=float)
    with np.errstate(invalid="ignore"):
        out = (stats.t.ppf(1 - alpha, dof) + stats.t.ppf(power, dof)) * se
    out = np.where(np.isfinite(se) & (dof >= 1), out, np.inf)
    return float(out) if out.ndim == 0 else out


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control, any dependence). NaN counts as 1."""
    p = np.nan_to_num(np.asarray(pvalues, dtype=float), nan=1.0)
    order = np.argsort(p, kind="stable")
    m = len(p)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


def holm_levels(pvalues, alpha: float = ALPHA) -> np.ndarray:
    """The one-sided level at which Holm's procedure tested each hypothesis: alpha/(m - rank) along the
    sorted p-values until the first failure, that failure's level for the rest."""
    p = np.nan_to_num(np.asarray(pvalues, dtype=float), nan=1.0)
    order = np.argsort(p, kind="stable")
    m = len(p)
    out = np.empty(m)
    level, stopped = alpha / m, False
    for rank, i in enumerate(order):
        if not stopped:
            level = alpha / (m - rank)
            stopped = p[i] >= level
        out[i] = level
    return out


# --------------------------------------------------------------------------------------------
# Exact permutation tests (small n, ties, integers, ranks)
# --------------------------------------------------------------------------------------------

def _sign_flips(n: int) -> np.ndarray:
    """All 2^n sign vectors, [2^n, n]."""
    return np.array(list(itertools.product((1.0, -1.0), repeat=n)))


def sign_flip_p(d) -> tuple[float, float]:
    """Exact one-sided p-values (greater, less) of the paired sign-flip test on the mean of `d`
    (last axis; leading axes are independent replicates). Exact for n <= 16."""
    d = np.asarray(d, dtype=float)
    n = d.shape[-1]
    _check("n", n, 1 <= n <= 16, "exact sign-flip test needs 1 <= n <= 16 pairs")
    flips = _sign_flips(n)                                  # [F, n]
    obs = d.sum(-1, keepdims=True)                          # [..., 1]
    null = d @ flips.T                                      # [..., F]
    tol = 1e-9 * (np.abs(d).sum(-1, keepdims=True) + 1)
    greater = (null >= obs - tol).mean(-1)
    less = (null <= obs + tol).mean(-1)
    return (float(greater), float(less)) if d.ndim == 1 else (greater, less)


def permutation_p(a, b, max_exact: int = 20000, seed: int = 0) -> tuple[float, float]:
    """One-sided p-values (greater, less) of the two-sample permutation test on mean(a) - mean(b):
    exact over all splits when there are at most `max_exact`, else a seeded Monte Carlo."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    pooled = np.concatenate([a, b])
    na, n = len(a), len(a) + len(b)
    _check("n", (len(a), len(b)), na >= 1 and len(b) >= 1, "need at least one value per arm")
    if math.comb(n, na) <= max_exact:
        idx = np.array(list(itertools.combinations(range(n), na)))
    else:
        rng = np.random.default_rng(seed)
        idx = np.argsort(rng.random((max_exact, n)), axis=1)[:, :na]
        idx = np.vstack([np.arange(na)[None], idx])
    total = pooled.sum()
    sa = pooled[idx].sum(1)
    stat = sa / na - (total - sa) / (n - na)
    obs = a.mean() - b.mean()
    tol = 1e-9 * (np.abs(pooled).sum() + 1)
    return float((stat >= obs - tol).mean()), float((stat <= obs + tol).mean())


def min_exact_p(n_pairs: int | None = None, n_a: int | None = None, n_b: int | None = None) -> float:
    """The smallest one-sided p an exact test can give: 2^-n paired, 1/C(n_a + n_b, n_a) unpaired."""
    if n_pairs is not None:
        return 2.0 ** -n_pairs
    return 1.0 / math.comb(n_a + n_b, n_a)


def _is_integer_valued(*arrays) -> bool:
    v = np.concatenate([np.asarray(x, dtype=float).ravel() for x in arrays])
    v = v[np.isfinite(v)]
    return bool(len(v)) and bool(np.all(v == np.round(v)))


# --------------------------------------------------------------------------------------------
# Decision cores (vectorised: scalars for the chapters, arrays for the calibration)
# --------------------------------------------------------------------------------------------

def _tq(alpha, dof):
    with np.errstate(invalid="ignore"):
        return stats.t.ppf(1 - alpha, dof)


def _decide_gain(est, se, dof, alpha, margin=None, margin_first=False, p_exact=None):
    """Claimed gain (est > 0 is the claim's side). Returns (code, reason, p_support, p_against, low, high,
    detectable). code 1 supported, -1 contradicted, 0 inconclusive; reason a key of REASONS.

    supported: one-sided p of est > 0 below alpha (and, with `p_exact`, the exact test agrees).
    contradicted: significant the other way (`other_way`), or with `margin`, the upper bound below the
    margin (`inside_margin`; only when the experiment could detect a margin-sized gain).
    `margin_first`: a claim about a gain that matters: an upper bound below the margin contradicts it
    even when the gain is significant."""
    est, se, dof = (np.asarray(x, dtype=float) for x in (est, se, dof))
    finite = np.isfinite(est) & np.isfinite(se) & (dof >= 1)
    zero = finite & (se == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        tstat = np.where(se > 0, est / np.where(se > 0, se, 1), np.sign(est) * np.inf)
        p_sup = np.where(finite, stats.t.sf(tstat, np.maximum(dof, 1)), np.nan)
        p_oth = np.where(finite, stats.t.cdf(tstat, np.maximum(dof, 1)), np.nan)
        q = _tq(alpha, np.maximum(dof, 1))
        low, high = est - q * se, est + q * se
    zp = np.where(est > 0, 0.0, np.where(est < 0, 1.0, 0.5))
    p_sup = np.where(zero, zp, p_sup)
    p_oth = np.where(zero, 1 - zp, p_oth)
    if p_exact is not None:                      # integer data or ties: the exact test must agree
        pe_sup, pe_oth = (np.asarray(x, dtype=float) for x in p_exact)
        p_sup, p_oth = np.maximum(p_sup, pe_sup), np.maximum(p_oth, pe_oth)
    det = np.where(finite, detectable_effect(np.where(finite, se, np.inf), np.maximum(dof, 1), alpha), np.inf)
    code = np.zeros(est.shape, dtype=int)
    reason = np.full(est.shape, "straddles", dtype=object)
    reason[~finite] = "too_few_runs"
    sup = finite & (p_sup < alpha)
    oth = finite & (p_oth < alpha)
    if margin is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            t_in = np.where(se > 0, (est - margin) / np.where(se > 0, se, 1), np.where(est < margin, -np.inf, np.inf))
        p_in = np.where(finite, stats.t.cdf(t_in, np.maximum(dof, 1)), np.nan)
        inside = finite & (p_in < alpha) & ~oth
        powered = det <= margin
        p_against = np.where(oth, p_oth, p_in)
    else:
        inside = np.zeros(est.shape, dtype=bool)
        powered = np.ones(est.shape, dtype=bool)
        p_against = p_oth
    if margin_first:
        code[inside & powered] = -1
        reason[inside & powered] = "inside_margin"
        take_sup = sup & ~(inside & powered)
    else:
        take_sup = sup
    code[take_sup] = 1
    reason[take_sup] = "significant"
    rest = (code == 0) & finite & ~take_sup
    code[rest & oth] = -1
    reason[rest & oth] = "other_way"
    ins = rest & ~oth & inside
    code[ins & powered] = -1
    reason[ins & powered] = "inside_margin"
    reason[ins & ~powered] = "underpowered"
    if margin is not None:
        und = (code == 0) & finite & (det > margin) & (reason == "straddles")
        reason[und] = "underpowered"
    if p_exact is not None:                      # an exact test that cannot reach alpha decides nothing
        cannot = (code == 0) & finite & (np.minimum(*(np.asarray(x, dtype=float) for x in p_exact)) >= alpha) & (
            (stats.t.sf(np.abs(tstat), np.maximum(dof, 1)) < alpha) | zero)
        reason[cannot] = "no_exact_test"
    return code, reason, p_sup, p_against, low, high, det


def _decide_equivalence(est, se, dof, margin, alpha):
    """TOST against ±margin. Returns (code, reason, p_tost, p_outside, low, high, detectable)."""
    est, se, dof = (np.asarray(x, dtype=float) for x in (est, se, dof))
    finite = np.isfinite(est) & np.isfinite(se) & (dof >= 1)
    d1 = np.maximum(dof, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(se > 0, se, np.nan)
        p_low = np.where(se > 0, stats.t.sf((est + margin) / s, d1), np.where(est > -margin, 0.0, 1.0))
        p_high = np.where(se > 0, stats.t.cdf((est - margin) / s, d1), np.where(est < margin, 0.0, 1.0))
        p_above = np.where(se > 0, stats.t.sf((est - margin) / s, d1), np.where(est > margin, 0.0, 1.0))
        p_below = np.where(se > 0, stats.t.cdf((est + margin) / s, d1), np.where(est < -margin, 0.0, 1.0))
        q = _tq(alpha, d1)
        low, high = est - q * se, est + q * se
    p_tost = np.where(finite, np.maximum(p_low, p_high), np.nan)
    p_out = np.where(finite, np.minimum(p_above, p_below), np.nan)
    det = np.where(finite, detectable_effect(np.where(finite, se, np.inf), d1, alpha), np.inf)
    code = np.zeros(est.shape, dtype=int)
    reason = np.full(est.shape, "straddles", dtype=object)
    reason[~finite] = "too_few_runs"
    sup = finite & (p_tost < alpha)
    out = finite & ~sup & (p_out < alpha)
    code[sup], reason[sup] = 1, "equivalent"
    code[out], reason[out] = -1, "outside_margin"
    reason[finite & (code == 0) & (det > margin)] = "underpowered"
    return code, reason, p_tost, p_out, low, high, det


def _decide_target(est, se, dof, target, alpha, higher_is_better=True, p_exact=None):
    """The mean against a target fixed in advance: supported when the whole interval is on the good
    side, contradicted when it is wholly on the wrong side, inconclusive otherwise."""
    sign = 1.0 if higher_is_better else -1.0
    g = sign * (np.asarray(est, dtype=float) - target)
    code, reason, p_sup, p_oth, low, high, det = _decide_gain(g, se, dof, alpha, p_exact=p_exact)
    reason = np.where(code == 1, "clears_target", np.where(code == -1, "misses_target", reason))
    lo_abs, hi_abs = (target + sign * low, target + sign * high) if higher_is_better else (target + sign * high,
                                                                                             target + sign * low)
    return code, reason, p_sup, p_oth, lo_abs, hi_abs, det


def _holm_all_of(codes, p_against, alpha):
    """A claim that needs every part: supported when every part is (intersection-union: no correction
    needed); contradicted when a part's Holm-adjusted p against the claim is below alpha; else
    inconclusive. `codes`, `p_against`: [..., k]."""
    codes = np.asarray(codes)
    pa = np.nan_to_num(np.asarray(p_against, dtype=float), nan=1.0)
    k = pa.shape[-1]
    srt = np.sort(pa, axis=-1)
    adj = np.maximum.accumulate(np.minimum(1.0, srt * (k - np.arange(k))), axis=-1)
    against = adj[..., 0] < alpha
    all_sup = np.all(codes == 1, axis=-1)
    return np.where(all_sup, 1, np.where(against, -1, 0))


# --------------------------------------------------------------------------------------------
# Rules the chapters call
# --------------------------------------------------------------------------------------------

def _from_core(core, evidence: str, n: int, estimate: float, level: float, margin=None, notes: dict | None = None
               ) -> Verdict:
    code, reason, p_sup, p_against, low, high, det = (np.asarray(x).reshape(-1)[0] for x in core)
    word = {1: SUPPORTED, -1: CONTRADICTED, 0: INCONCLUSIVE}[int(code)]
    reason = str(reason)
    extra = (notes or {}).get(reason, "")
    return Verdict(word, reason, evidence + extra, float(p_sup), float(p_against), n, float(estimate),
                   float(low), float(high), level, margin, float(det))


def _ranked_worst(a, b, sign):
    """Values with diverged (non-finite) runs replaced by a rank worse than every finite value."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    fin = np.concatenate([a[np.isfinite(a)], b[np.isfinite(b)]])
    worst = (fin.min() if sign > 0 else fin.max()) if len(fin) else 0.0
    span = (np.ptp(fin) if len(fin) else 0.0) + 1.0
    bad = worst - sign * span
    return np.where(np.isfinite(a), a, bad), np.where(np.isfinite(b), b, bad)


def _signed_ranks(d, diverged) -> np.ndarray:
    """Wilcoxon signed ranks of paired differences `d`; a pair with a diverged run gets a magnitude beyond
    every finite pair (its sign says which arm diverged; both diverged: 0)."""
    d = np.asarray(d, dtype=float).copy()
    finite_max = np.max(np.abs(d[~diverged]), initial=0.0)
    d[diverged] = np.sign(d[diverged]) * (finite_max + 1.0)
    mag = stats.rankdata(np.abs(d))
    return np.sign(d) * mag


def superiority(a, b, paired: bool, alpha: float = ALPHA, higher_is_better: bool = True,
                margin: float | None = None, n_tests: int = 1, unit: str = "",
                names: tuple[str, str] = ("a", "b"), margin_first: bool = False) -> Verdict:
    """Claim: `a` is better than `b`.

    supported: one-sided at alpha / n_tests (Bonferroni inside one claim; `superiority_family` for Holm
    across claims). contradicted: significant the other way, or with `margin` (the smallest gain that
    matters, absolute units, stated in advance) the whole interval below it, provided the experiment
    could have detected a margin-sized gain; otherwise inconclusive (`underpowered` when it could not).
    Diverged (non-finite) runs are ranked worst, never dropped: with any, the test is the exact
    sign-flip (paired) or permutation (Welch) test on the ranked values, and no interval is printed.
    Integer-valued data (counts) need the exact test to agree as well, so a zero-spread difference of
    counts at n = 3 is not significant (no exact test with 3 pairs reaches 5%).
    """
    _check("alpha", alpha, 0 < alpha < 0.5, "must be in (0, 0.5)")
    _check("n_tests", n_tests, n_tests >= 1, "must be >= 1")
    if margin is not None:
        _check("margin", margin, math.isfinite(margin) and margin > 0, "must be a finite number > 0")
    a_ = np.asarray(a, dtype=float)
    b_ = np.asarray(b, dtype=float)
    if paired and len(a_) != len(b_):
        raise ValueError(f"paired comparison needs equal lengths, got {len(a_)} and {len(b_)}")
    sign = 1.0 if higher_is_better else -1.0
    lvl = alpha / n_tests
    level = 1 - 2 * lvl
    n_div = int((~np.isfinite(a_)).sum() + (~np.isfinite(b_)).sum())
    head = f"{names[0]} − {names[1]}: "
    if n_div:
        ra, rb = _ranked_worst(a_, b_, sign)
        if paired:
            n = len(ra)
            signed = _signed_ranks(sign * (ra - rb), ~(np.isfinite(a_) & np.isfinite(b_)))
            g, l_ = sign_flip_p(signed) if n <= 16 else (np.nan, np.nan)
            floor = min_exact_p(n_pairs=n)
        else:
            ranks = stats.rankdata(sign * np.concatenate([ra, rb]))
            g, l_ = permutation_p(ranks[:len(ra)], ranks[len(ra):])
            n = min(len(ra), len(rb))
            floor = min_exact_p(n_a=len(ra), n_b=len(rb))
        ev = (head + f"{int((~np.isfinite(a_)).sum())} and {int((~np.isfinite(b_)).sum())} diverged runs ranked worst; "
              f"exact {'signed-rank' if paired else 'rank-sum'} test, one-sided p = {_fmt(g, 2)} (against: {_fmt(l_, 2)})")
        if g < lvl:
            return Verdict(SUPPORTED, "significant", ev, g, l_, n, level=level, margin=margin)
        if l_ < lvl:
            return Verdict(CONTRADICTED, "other_way", ev, g, l_, n, level=level, margin=margin)
        return Verdict(INCONCLUSIVE, "no_exact_test" if floor >= lvl else "straddles", ev, g, l_, n,
                       level=level, margin=margin)
    d = difference(a_, b_, paired, level=level)
    p_exact = None
    if _is_integer_valued(a_, b_) and d.n >= 1:
        if paired and len(a_) <= 16:
            p_exact = sign_flip_p(sign * (a_ - b_))
        elif not paired:
            p_exact = permutation_p(sign * a_, sign * b_)
    return superiority_of(d, alpha=lvl, higher_is_better=higher_is_better, margin=margin, unit=unit, names=names,
                          margin_first=margin_first, p_exact=p_exact, n_tests=n_tests)


def superiority_of(d: Difference, alpha: float = ALPHA, higher_is_better: bool = True, margin: float | None = None,
                   unit: str = "", names: tuple[str, str] = ("a", "b"), margin_first: bool = False,
                   p_exact: tuple[float, float] | None = None, n_tests: int = 1) -> Verdict:
    """`superiority`'s decision on a difference already estimated (e.g. `clustered_difference`; `superiority`
    itself ends here): `d` is a − b and its interval must be at level 1 − 2·alpha. `p_exact`: an exact test's
    one-sided p-values (support, against) that must agree (integer data); `n_tests`: the Bonferroni count
    already in `alpha`, for the evidence."""
    if margin is not None:
        _check("margin", margin, math.isfinite(margin) and margin > 0, "must be a finite number > 0")
    _check("d.level", d.level, abs(d.level - (1 - 2 * alpha)) < 1e-12, f"must be 1 - 2*alpha = {1 - 2 * alpha}")
    sign = 1.0 if higher_is_better else -1.0
    core = _decide_gain(sign * d.estimate, d.se, d.dof if np.isfinite(d.dof) else 0, alpha, margin, margin_first,
                        p_exact)
    det = float(np.asarray(core[6]).reshape(-1)[0])
    ev = f"{names[0]} − {names[1]}: " + d.text(unit)
    if p_exact is not None:
        ev += f"; exact {'sign-flip' if d.paired else 'permutation'} p = {_fmt(min(p_exact), 2)} (integer data)"
    if n_tests > 1:
        ev += f" (Bonferroni over {n_tests})"
    ev += f"; detectable {_fmt(det)}{unit}"
    if margin is not None:
        ev += f" against a margin of {_fmt(margin)}{unit}"
    v = _from_core(core, ev, d.n, d.estimate, d.level, margin, notes={
        "inside_margin": ": no gain that matters", "other_way": " (the other way)",
        "underpowered": ": a null result here cannot rule out a gain that matters",
        "no_exact_test": ": no exact test with these runs can reach the level"})
    v.low, v.high = d.low, d.high
    return v


def equivalence_of(d: Difference, margin: float, alpha: float = ALPHA, unit: str = "",
                   names: tuple[str, str] = ("a", "b")) -> Verdict:
    """`equivalence`'s TOST decision on a difference already estimated (e.g. `clustered_difference`)."""
    _check("margin", margin, isinstance(margin, (int, float)) and math.isfinite(margin) and margin > 0,
           "equivalence margin must be a finite number > 0")
    _check("d.level", d.level, abs(d.level - (1 - 2 * alpha)) < 1e-12, f"must be 1 - 2*alpha = {1 - 2 * alpha}")
    core = _decide_equivalence(d.estimate, d.se, d.dof if np.isfinite(d.dof) else 0, margin, alpha)
    det = float(np.asarray(core[6]).reshape(-1)[0])
    ev = f"{names[0]} − {names[1]}: " + d.text(unit) + f"; margin ±{_fmt(margin)}{unit}; detectable {_fmt(det)}{unit}"
    return _from_core(core, ev, d.n, d.estimate, d.level, margin, notes={
        "equivalent": ": inside", "outside_margin": ": outside", "straddles": ": straddles the margin",
        "underpowered": ": straddles, and the experiment cannot resolve the margin", "too_few_runs": " (too few usable runs)"})


def meets_target_of(d: Difference, target: float, higher_is_better: bool = True, alpha: float = ALPHA,
                    name: str = "value") -> Verdict:
    """`meets_target`'s decision on a mean already estimated (`d.estimate`, `d.se`, `d.dof`)."""
    _check("target", target, math.isfinite(target), "must be a finite number")
    core = _decide_target(d.estimate, d.se, d.dof if np.isfinite(d.dof) else 0, target, alpha, higher_is_better)
    lo, hi = float(np.asarray(core[4]).reshape(-1)[0]), float(np.asarray(core[5]).reshape(-1)[0])
    word = "at least" if higher_is_better else "at most"
    ev = (f"{name} {_fmt(d.estimate)} [{_fmt(lo)}, {_fmt(hi)}] ({100 * (1 - 2 * alpha):.0f}% CI, {d.method or f'n = {d.n}'}); "
          f"target {word} {_fmt(target)}")
    return _from_core(core, ev, d.n, d.estimate, 1 - 2 * alpha, target, notes={
        "clears_target": ": the interval clears it", "misses_target": ": the interval misses it",
        "straddles": ": the interval crosses it"})


def equivalence(a, b, margin: float, paired: bool, alpha: float = ALPHA, unit: str = "",
                names: tuple[str, str] = ("a", "b")) -> Verdict:
    """Claim: `a` is equivalent to `b` within ±margin (absolute units, stated before the run).

    TOST: supported when the (1 - 2 alpha) interval lies inside (-margin, margin) (`equivalent`);
    contradicted when it lies wholly outside (`outside_margin`); inconclusive otherwise, `underpowered`
    when the detectable difference exceeds the margin. Welch degrees of freedom when unpaired.
    Diverged runs are ranked worst: with any, equivalence cannot be shown (inconclusive) unless the
    ranked values differ significantly, which contradicts it."""
    _check("margin", margin, isinstance(margin, (int, float)) and math.isfinite(margin) and margin > 0,
           "equivalence margin must be a finite number > 0")
    a_, b_ = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    level = 1 - 2 * alpha
    head = f"{names[0]} − {names[1]}: "
    if not (np.all(np.isfinite(a_)) and np.all(np.isfinite(b_))):
        s = superiority(a_, b_, paired, alpha=alpha / 2, names=names, unit=unit)
        ev = s.evidence + f"; margin ±{_fmt(margin)}{unit}"
        if s.verdict != INCONCLUSIVE:       # a significant difference of ranks: not equivalent
            return Verdict(CONTRADICTED, "outside_margin", ev + ": the diverged runs set the arms apart",
                           s.p_against, min(s.p_support, s.p_against), s.n, level=level, margin=margin)
        return Verdict(INCONCLUSIVE, "straddles", ev + ": diverged runs, equivalence not shown", n=s.n,
                       level=level, margin=margin)
    return equivalence_of(difference(a_, b_, paired, level=level), margin, alpha=alpha, unit=unit, names=names)


def meets_target(values, target: float, higher_is_better: bool = True, alpha: float = ALPHA,
                 name: str = "value") -> Verdict:
    """Claim: the runs reach `target` (a requirement fixed in advance, e.g. "FD at most 150").

    supported when the whole (1 - 2 alpha) interval of the seed mean is on the good side;
    contradicted when it is wholly on the wrong side; inconclusive when it crosses the target.
    Diverged (non-finite) runs count as misses: with any, an exact sign test on "run reaches the
    target" decides."""
    if not math.isfinite(target):
        raise ValueError(f"target={target!r}: must be a finite number")
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("meets_target needs at least one value")
    sign = 1.0 if higher_is_better else -1.0
    word = "at least" if higher_is_better else "at most"
    level = 1 - 2 * alpha
    n_div = int((~np.isfinite(v)).sum())
    if n_div:
        hits = int(np.sum(np.isfinite(v) & (sign * (v - target) >= 0)))
        p_hit = float(stats.binom.sf(hits - 1, v.size, 0.5))
        p_miss = float(stats.binom.cdf(hits, v.size, 0.5))
        ev = f"{name}: {n_div} of {v.size} runs diverged (counted as misses), {hits} reach {word} {_fmt(target)}; sign test"
        if p_hit < alpha:
            return Verdict(SUPPORTED, "clears_target", ev, p_hit, p_miss, v.size, level=level, margin=target)
        if p_miss < alpha:
            return Verdict(CONTRADICTED, "misses_target", ev, p_hit, p_miss, v.size, level=level, margin=target)
        return Verdict(INCONCLUSIVE, "straddles", ev, p_hit, p_miss, v.size, level=level, margin=target)
    n = v.size
    mean = float(v.mean())
    se = float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else float("inf")
    p_exact = sign_flip_p(sign * (v - target)) if _is_integer_valued(v) and float(target).is_integer() and n <= 16 \
        else None                          # counts: the exact sign-flip test must agree
    core = _decide_target(mean, se, n - 1, target, alpha, higher_is_better, p_exact)
    lo, hi = float(np.asarray(core[4]).reshape(-1)[0]), float(np.asarray(core[5]).reshape(-1)[0])
    ev = f"{name} {_fmt(mean)} [{_fmt(lo)}, {_fmt(hi)}] ({100 * level:.0f}% CI, n = {n}); target {word} {_fmt(target)}"
    return _from_core(core, ev, n, mean, level, target, notes={
        "clears_target": ": the interval clears it", "misses_target": ": the interval misses it",
        "straddles": ": the interval crosses it", "too_few_runs": ": too few runs",
        "no_exact_test": ": no exact test with these runs can reach the level"})


def identity_rule(errors: dict[str, float], tol: float) -> Verdict:
    """Claim: an identity or limit holds. Each entry of `errors` is a measured discrepancy
    (float64); supported when every one is finite and at most `tol`, contradicted otherwise."""
    if not errors:
        raise ValueError("identity_rule needs at least one measured error")
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol={tol!r}: must be a finite number > 0")
    worst = max(errors, key=lambda k: errors[k] if math.isfinite(errors[k]) else math.inf)
    ok = all(math.isfinite(e) and e <= tol for e in errors.values())
    ev = "; ".join(f"{k}: {_fmt(v, 2)}" for k, v in errors.items())
    ev += f" (tolerance {_fmt(tol, 2)}; " + ("all within)" if ok else f"{worst} exceeds it)")
    return Verdict(SUPPORTED if ok else CONTRADICTED, "within_tolerance" if ok else "exceeds_tolerance", ev,
                   margin=tol, p_against=float("nan") if ok else 0.0)


def within_noise_rule(errors_in_se, bound: float = 4.0, what: str = "measurement") -> Verdict:
    """A closed-form prediction checked by simulation: supported when every |error| / standard error
    is below `bound`, contradicted when any is at or above it."""
    e = [float(v) for v in errors_in_se]
    if not e or not all(math.isfinite(v) and v >= 0 for v in e):
        raise ValueError(f"errors_in_se={errors_in_se!r}: need finite values >= 0")
    worst = max(e)
    ok = worst < bound
    return Verdict(SUPPORTED if ok else CONTRADICTED, "within_tolerance" if ok else "exceeds_tolerance",
                   f"{what}: largest |error| {worst:.2f} standard errors ({'<' if ok else '≥'} {bound:g}) "
                   f"over {len(e)} checks", margin=bound, p_against=float("nan") if ok else 0.0)


def all_of(parts: list[Verdict], label: str = "", show_parts: bool = False, alpha: float = ALPHA,
           margin: float | None = None) -> Verdict:
    """A claim that needs every part. supported when every part is supported (an intersection-union
    test: each part at alpha, no correction needed); contradicted when a part's p against the claim
    survives Holm's correction over the parts (so k parts sitting on their margins do not add up to a
    false contradiction); inconclusive otherwise. Parts without a p against (identities) that are
    contradicted count with p = 0. `margin`: the margin the parts shared (recorded on the verdict)."""
    if not parts:
        raise ValueError("all_of needs at least one part")
    codes = np.array([_CODE[p.verdict] for p in parts])
    pa = np.array([p.p_against if p.verdict != INCONCLUSIVE or p.reason in ("straddles",) else np.nan
                   for p in parts], dtype=float)
    pa = np.where((codes == -1) & ~np.isfinite(pa), 0.0, pa)
    pa = np.where(np.array([p.reason in ("underpowered", "testbed_cannot_discriminate", "gated", "no_exact_test",
                                         "unstable_on_rerun") for p in parts]), np.nan, pa)
    code = int(_holm_all_of(codes, pa, alpha))
    adj = holm(pa)
    evidence = (label + ": " if label else "") + "; ".join(
        p.evidence + (f" → {p.verdict}" if show_parts else "") for p in parts)
    if len(parts) > 1 and np.any(codes == -1):
        evidence += f"; Holm over {len(parts)} parts: smallest adjusted p against = {_fmt(float(np.min(adj)), 2)}"
    if code == 1:
        word, reason = SUPPORTED, "every_part"
    elif code == -1:
        word, reason = CONTRADICTED, "a_part_against"
    else:
        word = INCONCLUSIVE
        undecided = [p.reason for p in parts if p.verdict != SUPPORTED]
        reason = next((r for r in ("testbed_cannot_discriminate", "underpowered", "gated", "no_exact_test")
                       if r in undecided), "parts_undecided")
    dets = [p.detectable for p in parts if np.isfinite(p.detectable)]
    return Verdict(word, reason, evidence, max((p.p_support for p in parts if np.isfinite(p.p_support)),
                                               default=float("nan")),
                   float(np.min(adj)) if len(adj) else float("nan"), n=min((p.n for p in parts if p.n), default=None),
                   margin=margin, detectable=max(dets) if dets else float("nan"), parts=list(parts))


def any_of(parts: dict[str, Verdict], label: str = "") -> Verdict:
    """A claim that needs one part ("somewhere in this range"), each part already decided with the
    family's correction (`superiority_family`): supported when a part is; contradicted only when every
    part is (an intersection-union argument); inconclusive otherwise."""
    _check("parts", len(parts), len(parts) >= 1, "need at least one part")
    held = [k for k, v in parts.items() if v.verdict == SUPPORTED]
    against = all(v.verdict == CONTRADICTED for v in parts.values())
    head = f"holds at {', '.join(held)}" if held else "holds nowhere"
    ev = (label + ": " if label else "") + f"{head} ({len(held)} of {len(parts)}); " + "; ".join(
        v.evidence for v in parts.values())
    vals = list(parts.values())
    if held:
        return Verdict(SUPPORTED, "some_part", ev, min(v.p_support for v in vals if v.verdict == SUPPORTED),
                       parts=vals)
    if against:
        return Verdict(CONTRADICTED, "every_part_against", ev, p_against=max(
            (v.p_against for v in vals if np.isfinite(v.p_against)), default=0.0), parts=vals)
    undecided = [v.reason for v in vals if v.verdict == INCONCLUSIVE]
    reason = "underpowered" if "underpowered" in undecided else "parts_undecided"
    return Verdict(INCONCLUSIVE, reason, ev, parts=vals)


def same_either_way(parts: list[Verdict], label: str = "") -> Verdict:
    """A claim measured in several defensible ways, none preferred in advance: their common verdict
    when every measure gives the same one, otherwise inconclusive (`measures_disagree`)."""
    if not parts:
        raise ValueError("same_either_way needs at least one part")
    words = {p.verdict for p in parts}
    evidence = ((label + ": " if label else "") + "; ".join(f"{p.evidence} → {p.verdict}" for p in parts)
                + ("" if len(words) == 1 else "; the measures disagree"))
    if len(words) == 1:
        first = parts[0]
        reason = first.reason if all(p.reason == first.reason for p in parts) else {
            SUPPORTED: "every_part", CONTRADICTED: "a_part_against", INCONCLUSIVE: "parts_undecided"}[first.verdict]
        return Verdict(first.verdict, reason, evidence, max(p.p_support for p in parts),
                       max(p.p_against for p in parts), parts=list(parts))
    return Verdict(INCONCLUSIVE, "measures_disagree", evidence, parts=list(parts))


def superiority_family(comparisons: dict[str, tuple], paired: bool, alpha: float = ALPHA,
                       higher_is_better: bool = True, unit: str = "",
                       margins: dict[str, float] | None = None) -> dict[str, Verdict]:
    """Several superiority claims decided together with Holm's correction, in each direction.

    `comparisons`: name -> (a, b). A comparison is supported when its Holm-adjusted one-sided p is
    below alpha; contradicted when its Holm-adjusted p against (other way, or with `margins` the gain
    ruled out to reach the margin) is; each interval is printed at the level Holm tested it at."""
    margins = dict(margins or {})
    if set(margins) - set(comparisons) or any(not (np.isfinite(m) and m > 0) for m in margins.values()):
        raise ValueError(f"margins={margins!r}: need a finite margin > 0 for names among {list(comparisons)}")
    names = list(comparisons)
    raw = {k: superiority(a, b, paired, alpha=alpha, higher_is_better=higher_is_better, margin=margins.get(k),
                          unit=unit, names=(k, "reference")) for k, (a, b) in comparisons.items()}
    p_sup = np.array([raw[k].p_support for k in names])
    p_ag = np.array([raw[k].p_against if raw[k].reason != "underpowered" else np.nan for k in names])
    adj_sup, adj_ag = holm(p_sup), holm(p_ag)
    lv = holm_levels(p_sup, alpha)
    out = {}
    for i, k in enumerate(names):
        a, b = comparisons[k]
        at = superiority(a, b, paired, alpha=float(lv[i]), higher_is_better=higher_is_better,
                         margin=margins.get(k), unit=unit, names=(k, "reference"))
        ev = (f"{k}: " + at.evidence.split(": ", 1)[1]
              + f"; Holm over {len(names)}: adjusted p = {_fmt(adj_sup[i], 2)} (against: {_fmt(adj_ag[i], 2)})")
        base = dict(p_support=float(adj_sup[i]), p_against=float(adj_ag[i]), n=at.n, estimate=at.estimate,
                    low=at.low, high=at.high, level=at.level, margin=margins.get(k), detectable=at.detectable)
        if adj_sup[i] < alpha:
            out[k] = Verdict(SUPPORTED, "significant", ev, **base)
        elif adj_ag[i] < alpha:
            out[k] = Verdict(CONTRADICTED, raw[k].reason if raw[k].verdict == CONTRADICTED else "other_way", ev, **base)
        else:
            reason = raw[k].reason if raw[k].verdict == INCONCLUSIVE else "straddles"
            out[k] = Verdict(INCONCLUSIVE, reason, ev, **base)
    return out


def time_to_event(a, b, never: float = -1, alpha: float = ALPHA, paired: bool = False,
                  names: tuple[str, str] = ("a", "b"), run_length: int | None = None) -> Verdict:
    """Claim: `a` takes longer than `b` (e.g. steps to recover), where `never` marks "did not
    happen within the run": ranked beyond every observed count, never averaged.

    Exact permutation test on the ranked values (sign-flip when paired, two-sample otherwise). Where
    no exact test at these n can reach alpha (3 vs 3 unpaired: the smallest p is 1/20), inconclusive
    (`no_exact_test`)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    big = max(np.max(np.where(a == never, -np.inf, a), initial=0), np.max(np.where(b == never, -np.inf, b),
                                                                        initial=0)) + 1
    ra, rb = np.where(a == never, big, a), np.where(b == never, big, b)
    ranks = stats.rankdata(np.concatenate([ra, rb]))
    qa, qb = ranks[:len(ra)], ranks[len(ra):]
    if paired:
        if len(a) != len(b):
            raise ValueError(f"paired comparison needs equal lengths, got {len(a)} and {len(b)}")
        p_greater, p_less = sign_flip_p(qa - qb)
        floor = min_exact_p(n_pairs=int(np.sum(qa != qb)) or 1)
        test = "exact sign-flip test on ranks"
    else:
        p_greater, p_less = permutation_p(qa, qb)
        floor = min_exact_p(n_a=len(a), n_b=len(b))
        test = "exact permutation test on ranks"
    ev = (f"{names[0]}: {describe_events(a, never, run_length)}; {names[1]}: {describe_events(b, never, run_length)}"
          f" ({test}, one-sided p = {_fmt(p_greater, 2)}, the other way {_fmt(p_less, 2)})")
    n = len(a) if paired else min(len(a), len(b))
    if p_greater < alpha:
        return Verdict(SUPPORTED, "significant", ev, p_greater, p_less, n, level=1 - 2 * alpha)
    if p_less < alpha:
        return Verdict(CONTRADICTED, "other_way", ev, p_greater, p_less, n, level=1 - 2 * alpha)
    reason = "no_exact_test" if floor >= alpha else "straddles"
    return Verdict(INCONCLUSIVE, reason, ev + ("; no exact test at these n reaches the level"
                                               if reason == "no_exact_test" else ""), p_greater, p_less, n,
                   level=1 - 2 * alpha)


def describe_events(values, never: float = -1, run_length: int | None = None) -> str:
    """'median 1,620 (n = 5)', or with markers: 'median 1,620 (n = 3); 2/5 longer than the run'."""
    v = np.asarray(values, dtype=float)
    seen = v[v != never]
    n_never = int((v == never).sum())
    longer = f"longer than the run{f' ({run_length:,} steps)' if run_length else ''}"
    if len(seen) == 0:
        return f"all {len(v)} {longer}"
    text = f"median {_fmt(float(np.median(seen)))} (n = {len(seen)})"
    return text + (f"; {n_never}/{len(v)} {longer}" if n_never else "")


def divergence(diverged_a: int, n_a: int, diverged_b: int, n_b: int) -> float:
    """Two-sided Fisher exact p for 'the arms diverge at different rates'."""
    return float(stats.fisher_exact([[diverged_a, n_a - diverged_a], [diverged_b, n_b - diverged_b]]).pvalue)


def rise_rule(high: Sequence[float], low: Sequence[float], min_rise: float, alpha: float = ALPHA,
              names: tuple[str, str] = ("a", "b")) -> Verdict:
    """Claim: `high` exceeds `low` (paired), by a rise worth the name: superiority with `min_rise` as
    the smallest gain that matters (a clear fall and "no rise of that size" both contradict it)."""
    _check("min_rise", min_rise, min_rise > 0, "must be > 0")
    return superiority(high, low, paired=True, alpha=alpha, margin=min_rise, names=names)


def first_match(candidates: dict[int, Sequence[float]], reference: Sequence[float], margin: float,
                alpha: float = ALPHA) -> tuple[int | None, dict[int, float]]:
    r"""The fewest steps whose figure matches a reference (lower is better): `candidates[k]` and
    `reference` are paired per set, and a candidate matches when the one-sided $(1-\alpha)$ upper bound
    of the paired mean difference, candidate − reference, is at most `margin` (non-inferiority).
    Returns (that key or None, each key's upper bound)."""
    _check("margin", margin, margin >= 0 and math.isfinite(margin), "must be >= 0 and finite")
    bounds = {}
    for k in sorted(candidates):
        d = difference(candidates[k], reference, paired=True, level=1 - 2 * alpha)
        bounds[k] = d.high
    match = next((k for k in sorted(bounds) if bounds[k] <= margin), None)
    return match, bounds


def trend_rule(x: Sequence[float], y: Sequence[float], increasing: bool = True, alpha: float = ALPHA,
               names: tuple[str, str] = ("x", "y")) -> Verdict:
    """Claim: y rises (or falls) with x. Kendall's tau, one-sided at `alpha`: supported when significant
    the claimed way; contradicted when significant the other way or when y never changes."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    _check("len(x), len(y)", (len(x), len(y)), len(x) == len(y) >= 3, "need equal lengths of at least 3")
    word = "rises" if increasing else "falls"
    if np.all(y == y[0]):
        return Verdict(CONTRADICTED, "other_way", f"{names[1]} is {_fmt(float(y[0]))} at every {names[0]}",
                       p_against=0.0, n=len(x))
    claimed, other = ("greater", "less") if increasing else ("less", "greater")
    tau = float(stats.kendalltau(x, y).statistic)
    p = float(stats.kendalltau(x, y, alternative=claimed).pvalue)
    p_other = float(stats.kendalltau(x, y, alternative=other).pvalue)
    ev = (f"{names[1]} against {names[0]}: Kendall τ = {_fmt(tau, 2)} (n = {len(x)}, one-sided p = {_fmt(p, 2)}, "
          f"the other way {_fmt(p_other, 2)})")
    if p < alpha:
        return Verdict(SUPPORTED, "significant", ev + f": {names[1]} {word}", p, p_other, len(x))
    if p_other < alpha:
        return Verdict(CONTRADICTED, "other_way", ev, p, p_other, len(x))
    return Verdict(INCONCLUSIVE, "straddles", ev, p, p_other, len(x))


def interior_minimum_rule(fd: dict[float, Sequence[float]], best: float, alpha: float = ALPHA) -> Verdict:
    """Claim: the figure (lower is better) is U-shaped in a knob, with its minimum inside the grid.
    `fd[k]`: values on the judging sets (paired by set); `best`: the setting picked on a separate
    selection set. When `best` is interior: every part of `best` significantly lower than each end
    (Bonferroni over the two). When the selection set picks an end, the judging sets decide whether that
    end is significantly lower than its interior neighbour (contradicted) or not (inconclusive)."""
    keys = sorted(fd)
    _check("best", best, best in fd, f"must be one of the grid's values {keys}")
    if best in (keys[0], keys[-1]):
        neighbour = keys[1] if best == keys[0] else keys[-2]
        v = superiority(fd[neighbour], fd[best], paired=True, alpha=alpha, higher_is_better=False,
                        names=(f"at {neighbour:g}", f"at the end {best:g}"))
        ev = f"the selection set picks {best:g}, an end of the grid {keys}; on the judging sets: {v.evidence}"
        if v.verdict == CONTRADICTED:
            return dataclasses.replace(v, evidence=ev + ": the end is lower, no interior minimum")
        return dataclasses.replace(v, verdict=INCONCLUSIVE, reason="straddles" if v.reason != "underpowered"
                                   else "underpowered", evidence=ev)
    parts = [superiority(fd[best], fd[end], paired=True, alpha=alpha, higher_is_better=False, n_tests=2,
                         names=(f"at {best:g}", f"at {end:g}")) for end in (keys[-1], keys[0])]
    return all_of(parts, alpha=alpha)


def selected_gain_rule(fd: dict, reference, select: Sequence[int], judge: Sequence[int], alpha: float = ALPHA,
                       name: str = "setting", margin: float | None = None) -> tuple:
    """Claim: some setting of a knob beats the `reference` setting (lower is better). The setting with
    the lowest mean on the `select` sets is judged on the disjoint `judge` sets by `superiority`.
    Returns (selected key, Verdict); picking the reference itself contradicts the claim."""
    select, judge = list(select), list(judge)
    _check("select, judge", (select, judge), bool(select) and bool(judge) and not set(select) & set(judge),
           "need non-empty, disjoint lists of sample sets")
    _check("reference", reference, reference in fd, "must be one of the settings")
    keys = list(fd)
    best = min(keys, key=lambda k: (float(sum(fd[k][i] for i in select)), keys.index(k)))
    note = ""
    if best == reference:       # judge the best alternative instead: one pre-specified comparison either way
        best = min((k for k in keys if k != reference),
                   key=lambda k: (float(sum(fd[k][i] for i in select)), keys.index(k)))
        note = f"the selection set prefers the reference {name} {reference}; its best alternative is judged: "
    a = [fd[best][i] for i in judge]
    b = [fd[reference][i] for i in judge]
    v = superiority(a, b, paired=True, alpha=alpha, higher_is_better=False, margin=margin,
                    names=(f"{name} {best}", f"at {reference}"))
    return best, dataclasses.replace(v, evidence=note + v.evidence) if note else v


def ratio_interval(ratios, level: float = 1 - 2 * ALPHA) -> tuple[float, float, float, int]:
    """(geometric mean, low, high, n) of positive ratios: a t interval on their logarithms, back-transformed.
    One value, or values with no spread, give a point interval (an exact count, not a timing)."""
    logs = np.log(np.asarray(ratios, dtype=float))
    if len(logs) and np.ptp(logs) == 0:
        g = float(np.exp(logs[0]))
        return g, g, g, len(logs)
    d = difference(logs, np.zeros_like(logs), paired=True, level=level)
    return float(np.exp(d.estimate)), float(np.exp(d.low)), float(np.exp(d.high)), d.n


def ratio_rule(ratios, band: float, alpha: float = ALPHA, what: str = "ratio") -> Verdict:
    """Claim: the ratio is above 1 by more than `band` matters (e.g. a speed-up). On the (1 - 2 alpha)
    interval of the geometric mean: supported when it lies wholly above 1; contradicted when it lies
    wholly below 1 + band (no gain that matters) or below 1; inconclusive otherwise."""
    _check("band", band, band > 0, "must be > 0")
    level = 1 - 2 * alpha
    g, lo, hi, n = ratio_interval(ratios, level)
    if lo == hi:
        ev = f"{what} {_fmt(g)} (exact, no spread)"
    else:
        ev = f"{what} {_fmt(g)} [{_fmt(lo)}, {_fmt(hi)}] ({100 * level:.0f}% t-interval of the geometric mean, n = {n})"
    ev += f"; a gain that matters: above {_fmt(1 + band)}"
    base = dict(n=n, estimate=g, low=lo, high=hi, level=level, margin=band)
    if lo > 1:
        return Verdict(SUPPORTED, "significant", ev + ": above 1", **base)
    if hi < 1:
        return Verdict(CONTRADICTED, "other_way", ev + ": below 1", **base)
    if hi < 1 + band:
        return Verdict(CONTRADICTED, "inside_margin", ev + ": no gain that matters", **base)
    return Verdict(INCONCLUSIVE, "straddles", ev + ": straddles 1", **base)


# --------------------------------------------------------------------------------------------
# Positive controls, gates, replication
# --------------------------------------------------------------------------------------------

def positive_control(known_better, known_worse, paired: bool, higher_is_better: bool = True, unit: str = "",
                     names: tuple[str, str] = ("known better", "known worse"), alpha: float = ALPHA) -> Verdict:
    """Does the testbed separate two arms known to differ (same metric and n as the claims)? The
    control passes when `known_better` is significantly better (`superiority`)."""
    return superiority(known_better, known_worse, paired, alpha=alpha, higher_is_better=higher_is_better,
                       unit=unit, names=names)


def with_control(verdict: Verdict, control: Verdict | None, equivalence: bool = False) -> Verdict:
    """A verdict on a testbed that failed its positive control cannot contradict the claim: a null or
    negative result there is `testbed_cannot_discriminate`. A supported difference stands (an effect found
    is found), but a supported *equivalence* does not (`equivalence=True`): a testbed that cannot tell
    arms apart makes every pair look equivalent."""
    if control is None or control.verdict == SUPPORTED:
        return verdict
    if verdict.verdict != CONTRADICTED and not (equivalence and verdict.verdict == SUPPORTED):
        return verdict
    return verdict.inconclusive("testbed_cannot_discriminate",
                                f"the testbed failed its positive control ({control.evidence})")


def gate(verdict: Verdict, precondition: Verdict, what: str) -> Verdict:
    """`verdict` counts only when `precondition` (e.g. "generation has been learned") is supported."""
    if precondition.verdict == SUPPORTED:
        import dataclasses
        return dataclasses.replace(verdict, evidence=f"{precondition.evidence}; {verdict.evidence}",
                                   parts=[precondition, verdict])
    return Verdict(INCONCLUSIVE, "gated", f"{what}: {precondition.evidence}; not judged ({verdict.evidence})",
                   n=verdict.n, estimate=verdict.estimate, low=verdict.low, high=verdict.high, level=verdict.level,
                   margin=verdict.margin, detectable=verdict.detectable, parts=[precondition, verdict])


def replicate(verdict: str, reason: str, verdict_on_rerun: str | None, reason_on_rerun: str | None = None
              ) -> tuple[str, str]:
    """The chapter's verdict after its rerun on disjoint seeds: kept when the rerun agrees (or has not
    run), inconclusive (`unstable_on_rerun`) when the verdict words differ."""
    if verdict_on_rerun is None or verdict_on_rerun not in VERDICTS or verdict_on_rerun == verdict:
        return verdict, reason
    return INCONCLUSIVE, "unstable_on_rerun"


# --------------------------------------------------------------------------------------------
# Calibration: the rules' operating characteristics, simulated
# --------------------------------------------------------------------------------------------

def _sim_pairs(rng, reps, n, mean):
    return rng.standard_normal((reps, n)) + mean


def _rates(code):
    code = np.asarray(code)
    return float(np.mean(code == 1)), float(np.mean(code == -1))


def operating_characteristics(ns: Sequence[int] = (3, 5, 10), reps: int = 4000, seed: int = 0,
                              alpha: float = ALPHA):
    """Simulate each rule at the truths where its errors are defined and return a table
    (rule, truth, n, P(supported), P(contradicted), the error that must stay <= alpha).

    Data are unit-sd normal differences (paired); margins and targets are in sd units. Every row runs
    the same decision core as the rule the chapters call."""
    import pandas as pd
    rng = np.random.default_rng(seed)
    rows = []

    def add(rule, truth, n, code, bound_on):
        """`bound_on`: the error that must stay <= alpha at this truth: "supported", "contradicted" or "both"."""
        s, c = _rates(code)
        err = {"supported": s, "contradicted": c, "both": max(s, c)}[bound_on]
        rows.append({"rule": rule, "truth": truth, "n": n, "P(supported)": s, "P(contradicted)": c,
                     "must be ≤ α": bound_on, "error rate": err})

    for n in ns:
        dof = n - 1

        def core_gain(x, margin=None):
            est, se = x.mean(1), x.std(1, ddof=1) / math.sqrt(n)
            return _decide_gain(est, se, np.full(len(x), dof), alpha, margin)[0]

        # superiority with a margin of 1 sd: no gain -> false supported; gain = margin -> false contradicted
        add("superiority (margin 1 sd)", "no difference", n, core_gain(_sim_pairs(rng, reps, n, 0.0), 1.0), "supported")
        add("superiority (margin 1 sd)", "gain = margin", n, core_gain(_sim_pairs(rng, reps, n, 1.0), 1.0),
            "contradicted")
        # superiority without margin: the other way at the null
        add("superiority (no margin)", "no difference", n, core_gain(_sim_pairs(rng, reps, n, 0.0)), "both")
        # equivalence, margin 1 sd
        for truth, label, bound in ((1.0, "difference = margin", "supported"), (0.0, "no difference", "contradicted")):
            x = _sim_pairs(rng, reps, n, truth)
            est, se = x.mean(1), x.std(1, ddof=1) / math.sqrt(n)
            add("equivalence (margin 1 sd)", label, n, _decide_equivalence(est, se, np.full(reps, dof), 1.0, alpha)[0],
                bound)
        # equivalence, unpaired (Welch dof), unequal spreads
        x = rng.standard_normal((reps, n)) * 2.0 + 1.0
        y = rng.standard_normal((reps, n)) * 0.5
        va, vb = x.var(1, ddof=1) / n, y.var(1, ddof=1) / n
        code = _decide_equivalence(x.mean(1) - y.mean(1), np.sqrt(va + vb), _welch_dof(va, vb, n, n), 1.0, alpha)[0]
        add("equivalence, Welch (margin 1 sd)", "difference = margin", n, code, "supported")
        # meets_target at the target: both errors
        x = _sim_pairs(rng, reps, n, 0.0)
        est, se = x.mean(1), x.std(1, ddof=1) / math.sqrt(n)
        add("meets_target", "mean = target", n, _decide_target(est, se, np.full(reps, dof), 0.0, alpha)[0], "both")
        # all_of, three parts each with a 1-sd margin, every part's truth on its margin
        parts_c, parts_p = [], []
        for _ in range(3):
            x = _sim_pairs(rng, reps, n, 1.0)
            c, _, _, pa, *_ = _decide_gain(x.mean(1), x.std(1, ddof=1) / math.sqrt(n), np.full(reps, dof), alpha, 1.0)
            parts_c.append(c)
            parts_p.append(pa)
        add("all_of (3 parts, margin 1 sd)", "every part = margin", n,
            _holm_all_of(np.stack(parts_c, -1), np.stack(parts_p, -1), alpha), "contradicted")
        parts_c = []
        for i in range(3):
            x = _sim_pairs(rng, reps, n, 0.0 if i == 0 else 5.0)
            parts_c.append(_decide_gain(x.mean(1), x.std(1, ddof=1) / math.sqrt(n), np.full(reps, dof), alpha, 1.0)[0])
        add("all_of (3 parts, margin 1 sd)", "one part null, two clear", n,
            _holm_all_of(np.stack(parts_c, -1), np.zeros((reps, 3)) + 1.0, alpha), "supported")
        # integer counts with ties: Poisson(5) both arms, exact sign-flip must agree
        if n <= 16:
            a = rng.poisson(5.0, (reps, n)).astype(float)
            b = rng.poisson(5.0, (reps, n)).astype(float)
            d = a - b
            g, l_ = sign_flip_p(d)
            est, se = d.mean(1), d.std(1, ddof=1) / math.sqrt(n)
            add("superiority (integer counts)", "no difference", n,
                _decide_gain(est, se, np.full(reps, dof), alpha, None, False, (g, l_))[0], "both")
            # time to event (paired ranks) under the null, with "never" markers
            a = np.where(rng.random((reps, n)) < 0.2, np.inf, rng.exponential(1.0, (reps, n)))
            b = np.where(rng.random((reps, n)) < 0.2, np.inf, rng.exponential(1.0, (reps, n)))
            big = 1e9
            ra, rb = np.where(np.isinf(a), big, a), np.where(np.isinf(b), big, b)
            ranks = stats.rankdata(np.concatenate([ra, rb], 1), axis=1)
            g, l_ = sign_flip_p(ranks[:, :n] - ranks[:, n:])
            add("time_to_event (paired)", "no difference", n, np.where(g < alpha, 1, np.where(l_ < alpha, -1, 0)),
                "both")
            # diverged runs ranked worst: two of the worst runs of each arm diverge at the null
            a, b = _sim_pairs(rng, reps, n, 0.0), _sim_pairs(rng, reps, n, 0.0)
            k = max(1, n // 5)
            a_bad = np.argsort(a, 1)[:, :k]
            b_bad = np.argsort(b, 1)[:, :k]
            worst = -1e6
            np.put_along_axis(a, a_bad, worst, 1)
            np.put_along_axis(b, b_bad, worst, 1)
            g, l_ = sign_flip_p(a - b)
            add("superiority (diverged ranked worst)", "no difference", n,
                np.where(g < alpha, 1, np.where(l_ < alpha, -1, 0)), "both")
    return pd.DataFrame(rows)


def calibration_ok(table, alpha: float = ALPHA, reps: int = 4000) -> tuple[bool, str]:
    """Every simulated error rate at most alpha plus three Monte Carlo standard errors."""
    tol = alpha + 3 * math.sqrt(alpha * (1 - alpha) / reps)
    bad = table[table["error rate"] > tol]
    if len(bad):
        return False, "; ".join(f"{r.rule} at n = {r.n} ({r.truth}): {r['error rate']:.3f}" for _, r in bad.iterrows())
    return True, f"every error rate ≤ {tol:.3f}"


def main(argv=None) -> int:
    """`python -m kexue.verdicts calibrate --out reports/calibration`: the operating-characteristics table."""
    import argparse
    from pathlib import Path
    ap = argparse.ArgumentParser(description="Simulate the verdict rules' error rates")
    ap.add_argument("command", choices=["calibrate"])
    ap.add_argument("--out", default="reports/calibration")
    ap.add_argument("--reps", type=int, default=4000)
    args = ap.parse_args(argv)
    _check("--reps", args.reps, args.reps >= 100, "must be >= 100")
    table = operating_characteristics(reps=args.reps)
    ok, text = calibration_ok(table, reps=args.reps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "calibration.csv", index=False, float_format="%.4f")
    print(f"calibration: {len(table)} cells, {text}")
    return 0 if ok else 1


if __name__ == "__main__":
    import sys
    sys.exit(main())
