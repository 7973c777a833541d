"""Verdict rules: the statistics every chapter's claims table rests on (DESIGN.md, "Reports").

A claim's verdict is one of `VERDICTS`. It is never a literal string in a notebook: it comes
out of one of the rules below, applied to per-seed measurements.

* `difference`: the mean difference a - b with its confidence interval; paired (a[i], b[i]
  share seed i's initialisation and data) or Welch. Diverged runs (NaN/inf) are counted and
  reported, never silently dropped into a NaN mean.
* `superiority`: "a is better than b" — supported when the difference is significant in the
  claimed direction, not supported when it is significant the other way *or* when an
  equivalence margin is given and the difference is shown to lie inside it, inconclusive otherwise.
* `equivalence`: "a is as good as b" — two one-sided tests (TOST) against a margin stated in
  advance: supported when the (1 - 2 alpha) interval lies inside (-margin, margin), not supported
  when it lies entirely outside it, inconclusive otherwise.
* `holm`: Holm's step-down correction when one verdict rests on several tests;
  `all_of` combines such verdicts (every part must hold).
* `time_to_event`: counts with a "never happened within the run" marker, compared by ranks
  with the marker ranked beyond every observed count (never averaged as a number).
* `divergence`: are divergence counts different between arms (Fisher's exact test)?
* `identity_rule`: an identity or limit holds when every measured discrepancy is within a tolerance.
* `meets_target`: a figure of merit reaches a target fixed in advance (the seed mean must reach it;
  the interval decides between supported and inconclusive).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

VERDICTS = ("supported", "not supported", "inconclusive at this scale")
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = VERDICTS


def _fmt(x: float, sig: int = 3) -> str:
    from .report import fmt
    return fmt(x, sig)


@dataclass
class Difference:
    """a - b over seeds: estimate, (1 - 2*alpha_ci) interval, two-sided p, counts."""
    estimate: float
    low: float
    high: float
    p: float
    n: int                        # pairs (paired) or min(n_a, n_b) used
    paired: bool
    diverged_a: int = 0
    diverged_b: int = 0
    level: float = 0.95

    def text(self, unit: str = "", sig: int = 3) -> str:
        div = ""
        if self.diverged_a or self.diverged_b:
            div = f"; diverged runs excluded: {self.diverged_a} and {self.diverged_b}"
        kind = "paired" if self.paired else "Welch"
        return (f"difference {_fmt(self.estimate, sig)}{unit} [{_fmt(self.low, sig)}, {_fmt(self.high, sig)}]"
                f" ({100 * self.level:.0f}% CI, {kind}, n = {self.n}, p = {_fmt(self.p, 2)}{div})")


@dataclass
class Verdict:
    verdict: str
    evidence: str
    p: float = float("nan")
    parts: list = field(default_factory=list)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r}: must be one of {VERDICTS}")


def finite_split(values) -> tuple[np.ndarray, np.ndarray]:
    """(finite mask, values as float array): a non-finite value marks a diverged run."""
    v = np.asarray(values, dtype=float)
    return np.isfinite(v), v


def difference(a, b, paired: bool, level: float = 0.95) -> Difference:
    """Mean difference a - b with a t interval at `level` and the two-sided t-test's p.

    Paired: pairs where either run diverged are dropped (and counted). Unpaired: Welch.
    Fewer than 2 usable values gives an infinite interval and p = nan; zero spread gives a
    point interval (p = 0 for a non-zero difference, 1 for none).
    """
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
        dof = n - 1
    else:
        a, b = a[ok_a], b[ok_b]
        n = min(len(a), len(b))
        est = float(a.mean() - b.mean()) if n else float("nan")
        va = a.var(ddof=1) / len(a) if len(a) > 1 else float("inf")
        vb = b.var(ddof=1) / len(b) if len(b) > 1 else float("inf")
        se = float(np.sqrt(va + vb))
        dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if n > 1 and va + vb > 0 else 1
    div_a, div_b = int((~ok_a).sum()), int((~ok_b).sum())
    if not np.isfinite(est) or not np.isfinite(se):
        return Difference(est, -np.inf, np.inf, float("nan"), n, paired, div_a, div_b, level)
    if se == 0:
        p = 1.0 if est == 0 else 0.0
        return Difference(est, est, est, p, n, paired, div_a, div_b, level)
    q = stats.t.ppf(0.5 + level / 2, dof)
    p = float(2 * stats.t.sf(abs(est / se), dof))
    return Difference(est, est - q * se, est + q * se, p, n, paired, div_a, div_b, level)


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control, any dependence)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    m = len(p)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


def superiority(a, b, paired: bool, alpha: float = 0.05, higher_is_better: bool = True,
                margin: float | None = None, n_tests: int = 1, unit: str = "",
                names: tuple[str, str] = ("a", "b"), margin_first: bool = False) -> Verdict:
    """Claim: `a` is better than `b`.

    supported: a two-sided test at alpha / n_tests (Bonferroni inside one claim; use `holm`
    across a family) finds a better than b.
    not supported: it finds a worse; or, with `margin`, the (1 - 2 alpha) interval of the
    difference lies within (-margin, margin): no gain of a size that matters.
    inconclusive: neither.
    margin_first: check the margin before the test, so a significant but immaterial gain (the
    whole interval inside ±margin) is not supported rather than supported.
    """
    d = difference(a, b, paired, level=1 - 2 * alpha)
    sign = 1 if higher_is_better else -1
    p_two = d.p
    better = sign * d.estimate > 0
    threshold = alpha / n_tests
    ev = f"{names[0]} − {names[1]}: {d.text(unit)}"
    inside = margin is not None and d.low > -margin and d.high < margin
    if margin_first and inside:
        return Verdict(NOT_SUPPORTED, ev + f"; inside ±{_fmt(margin)}{unit}: no gain that matters", p_two)
    if np.isfinite(p_two) and p_two < threshold:
        return Verdict(SUPPORTED if better else NOT_SUPPORTED, ev + ("" if better else " (the other way)"), p_two)
    if margin is not None and d.low > -margin and d.high < margin:
        return Verdict(NOT_SUPPORTED, ev + f"; inside ±{_fmt(margin)}{unit}: no gain that matters", p_two)
    return Verdict(INCONCLUSIVE, ev, p_two)


def equivalence(a, b, margin: float, paired: bool, alpha: float = 0.05, unit: str = "",
                names: tuple[str, str] = ("a", "b")) -> Verdict:
    """Claim: `a` is equivalent to `b` within ±margin (stated before looking at the data).

    TOST at level alpha: supported when the (1 - 2 alpha) interval of a - b lies inside
    (-margin, margin); not supported when it lies entirely outside; inconclusive otherwise.
    The reported p is TOST's (the larger of the two one-sided p-values).
    """
    if not margin > 0:
        raise ValueError(f"equivalence margin must be > 0, got {margin!r}")
    d = difference(a, b, paired, level=1 - 2 * alpha)
    ev = f"{names[0]} − {names[1]}: {d.text(unit)}; margin ±{_fmt(margin)}{unit}"
    if not np.isfinite(d.low) or not np.isfinite(d.high):
        return Verdict(INCONCLUSIVE, ev + " (too few usable runs)", float("nan"))
    # One-sided p-values of H0: diff <= -margin and H0: diff >= margin, from the same t interval.
    half = (d.high - d.low) / 2
    if half == 0:
        p_tost = 0.0 if -margin < d.estimate < margin else 1.0
    else:
        dof = max(d.n - 1, 1)
        se = half / stats.t.ppf(1 - alpha, dof)
        p_low = stats.t.sf((d.estimate + margin) / se, dof)
        p_high = stats.t.cdf((d.estimate - margin) / se, dof)
        p_tost = float(max(p_low, p_high))
    if d.low > -margin and d.high < margin:
        return Verdict(SUPPORTED, ev + ": inside", p_tost)
    if d.low >= margin or d.high <= -margin:
        return Verdict(NOT_SUPPORTED, ev + ": outside", p_tost)
    return Verdict(INCONCLUSIVE, ev + ": straddles the margin", p_tost)


def all_of(parts: list[Verdict], label: str = "", show_parts: bool = False) -> Verdict:
    """A claim that needs every part: not supported if any part is not, supported if all are,
    inconclusive otherwise. (Apply `holm` to the parts' p-values before deciding them.)
    `show_parts`: each part's evidence ends with its own verdict ("… → not supported")."""
    if not parts:
        raise ValueError("all_of needs at least one part")
    words = [p.verdict for p in parts]
    verdict = (NOT_SUPPORTED if NOT_SUPPORTED in words else SUPPORTED if all(w == SUPPORTED for w in words)
               else INCONCLUSIVE)
    evidence = (label + ": " if label else "") + "; ".join(p.evidence + (f" → {p.verdict}" if show_parts else "")
                                                          for p in parts)
    return Verdict(verdict, evidence, max((p.p for p in parts if np.isfinite(p.p)), default=float("nan")), parts)


def same_either_way(parts: list[Verdict], label: str = "") -> Verdict:
    """A claim measured in several defensible ways, none preferred in advance: their common verdict when
    every measure gives the same one, otherwise inconclusive (the answer depends on the measure).
    Each part's evidence ends with its own verdict."""
    if not parts:
        raise ValueError("same_either_way needs at least one part")
    words = {p.verdict for p in parts}
    verdict = parts[0].verdict if len(words) == 1 else INCONCLUSIVE
    evidence = ((label + ": " if label else "") + "; ".join(f"{p.evidence} → {p.verdict}" for p in parts)
                + ("" if len(words) == 1 else "; the measures disagree"))
    return Verdict(verdict, evidence, max((p.p for p in parts if np.isfinite(p.p)), default=float("nan")), parts)


def superiority_family(comparisons: dict[str, tuple], paired: bool, alpha: float = 0.05,
                       higher_is_better: bool = True, unit: str = "",
                       margins: dict[str, float] | None = None) -> dict[str, Verdict]:
    """Several superiority claims decided together with Holm's correction.

    `comparisons`: name -> (a, b). Each verdict uses its Holm-adjusted p at level alpha. `margins`
    (name -> smallest difference that matters, stated in advance) works as in `superiority`: a
    non-significant difference whose (1 - 2 alpha) interval lies within ±margin is not supported.
    """
    margins = dict(margins or {})
    if set(margins) - set(comparisons) or any(not (np.isfinite(m) and m > 0) for m in margins.values()):
        raise ValueError(f"margins={margins!r}: need a finite margin > 0 for names among {list(comparisons)}")
    raw = {k: difference(a, b, paired, level=1 - 2 * alpha) for k, (a, b) in comparisons.items()}
    names = list(raw)
    adj = holm([raw[k].p if np.isfinite(raw[k].p) else 1.0 for k in names])
    out = {}
    sign = 1 if higher_is_better else -1
    for k, p_adj in zip(names, adj):
        d = raw[k]
        ev = f"{k}: {d.text(unit)}, Holm-adjusted p = {_fmt(p_adj, 2)} over {len(names)} tests"
        if p_adj < alpha:
            out[k] = Verdict(SUPPORTED if sign * d.estimate > 0 else NOT_SUPPORTED, ev, float(p_adj))
        elif k in margins and -margins[k] < d.low and d.high < margins[k]:
            out[k] = Verdict(NOT_SUPPORTED, ev + f"; inside ±{_fmt(margins[k])}{unit}: no gain that matters",
                             float(p_adj))
        else:
            out[k] = Verdict(INCONCLUSIVE, ev, float(p_adj))
    return out


def time_to_event(a, b, never: float = -1, alpha: float = 0.05, paired: bool = False,
                  names: tuple[str, str] = ("a", "b"), run_length: int | None = None) -> Verdict:
    """Claim: `a` takes longer than `b` (e.g. steps to recover), where `never` marks "did not
    happen within the run": ranked beyond every observed count, never averaged.

    Paired: Wilcoxon signed-rank on ranks; unpaired: Mann-Whitney U. One-sided in the claimed
    direction for support; significant the other way is not supported.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    big = max(np.max(np.where(a == never, -np.inf, a), initial=0), np.max(np.where(b == never, -np.inf, b),
                                                                        initial=0)) + 1
    ra, rb = np.where(a == never, big, a), np.where(b == never, big, b)
    if paired:
        diff = ra - rb
        if np.all(diff == 0):
            p_greater = p_less = 1.0
        else:
            p_greater = float(stats.wilcoxon(ra, rb, alternative="greater").pvalue)
            p_less = float(stats.wilcoxon(ra, rb, alternative="less").pvalue)
    else:
        p_greater = float(stats.mannwhitneyu(ra, rb, alternative="greater").pvalue)
        p_less = float(stats.mannwhitneyu(ra, rb, alternative="less").pvalue)
    ev = f"{names[0]}: {describe_events(a, never, run_length)}; {names[1]}: {describe_events(b, never, run_length)}"
    if p_greater < alpha:
        return Verdict(SUPPORTED, ev + f" (one-sided rank p = {_fmt(p_greater, 2)})", p_greater)
    if p_less < alpha:
        return Verdict(NOT_SUPPORTED, ev + f" (the other way, rank p = {_fmt(p_less, 2)})", p_less)
    return Verdict(INCONCLUSIVE, ev + f" (rank p = {_fmt(min(p_greater, p_less), 2)})",
                   min(p_greater, p_less))


def describe_events(values, never: float = -1, run_length: int | None = None) -> str:
    """'median 1,620 steps (n = 5)', or with markers: 'median 1,620 steps; 2/5 longer than the run'."""
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


def min_detectable_difference(spread: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true paired difference a test with `n` seeds detects with `power`, given the
    per-seed spread (sd) of the differences: the noise floor a notebook quotes."""
    if n < 2 or not spread >= 0:
        return float("inf")
    dof = n - 1
    return float((stats.t.ppf(1 - alpha / 2, dof) + stats.t.ppf(power, dof)) * spread / np.sqrt(n))


def identity_rule(errors: dict[str, float], tol: float) -> Verdict:
    """Claim: an identity or limit holds. Each entry of `errors` is a measured discrepancy
    (float64); supported when every one is finite and at most `tol`, not supported otherwise."""
    if not errors:
        raise ValueError("identity_rule needs at least one measured error")
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol={tol!r}: must be a finite number > 0")
    worst = max(errors, key=lambda k: errors[k] if math.isfinite(errors[k]) else math.inf)
    ok = all(math.isfinite(e) and e <= tol for e in errors.values())
    ev = "; ".join(f"{k}: {_fmt(v, 2)}" for k, v in errors.items())
    ev += f" (tolerance {_fmt(tol, 2)}; " + ("all within)" if ok else f"{worst} exceeds it)")
    return Verdict(SUPPORTED if ok else NOT_SUPPORTED, ev)


def meets_target(values, target: float, higher_is_better: bool = True, alpha: float = 0.05,
                 name: str = "value") -> Verdict:
    """Claim: the runs reach `target` (a requirement fixed in advance, e.g. "FD at most 150").

    A target is a requirement on the typical run, so the seed mean must reach it:
    not supported when the mean misses it (however wide the spread: more seeds would only narrow
    the interval around a miss); supported when the whole (1 - 2 alpha) interval of the mean is on
    the good side (a one-sided test at alpha); inconclusive when the mean reaches the target but
    the interval crosses it. Diverged (non-finite) runs count as misses.
    """
    if not math.isfinite(target):
        raise ValueError(f"target={target!r}: must be a finite number")
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("meets_target needs at least one value")
    n_div = int((~np.isfinite(v)).sum())
    sign = 1.0 if higher_is_better else -1.0
    word = "at least" if higher_is_better else "at most"
    if n_div:
        return Verdict(NOT_SUPPORTED, f"{name}: {n_div} of {v.size} runs diverged; target {word} {_fmt(target)}")
    d = difference(v, np.full(v.size, float(target)), paired=True, level=1 - 2 * alpha)
    mean = float(v.mean())
    ev = (f"{name} {_fmt(mean)} [{_fmt(d.low + target)}, {_fmt(d.high + target)}] ({100 * d.level:.0f}% CI, "
          f"n = {v.size}); target {word} {_fmt(target)}")
    if sign * (mean - target) < 0:
        return Verdict(NOT_SUPPORTED, ev + ": the mean misses it", d.p)
    bound = d.low if higher_is_better else d.high          # of the mean minus the target
    if sign * bound > 0:
        return Verdict(SUPPORTED, ev + ": the interval clears it", d.p)
    return Verdict(INCONCLUSIVE, ev + ": the mean reaches it, the interval crosses it", d.p)
