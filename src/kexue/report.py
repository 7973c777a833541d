"""One place for what every chapter writes: figures, tables, DVCLive metrics, claims.

A chapter's report folder (`reports/CHAPTER/`, or the runner's staging folder):

    CHAPTER.ipynb, CHAPTER.html   written by the runner
    metrics.json                  DVCLive summary (dvc metrics)
    plots/metrics/*.tsv           DVCLive step curves (dvc plots)
    figures/*.png, tables/*.csv   written here
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .config import ROOT  # noqa: E402

VERDICTS = ("supported", "not supported", "inconclusive at this scale")


@dataclass
class Report:
    """Paths of one chapter's report folder, created on first use."""
    dir: Path

    def __post_init__(self):
        self.dir = Path(self.dir)
        if not self.dir.is_absolute():
            self.dir = ROOT / self.dir
        (self.dir / "figures").mkdir(parents=True, exist_ok=True)
        (self.dir / "tables").mkdir(parents=True, exist_ok=True)

    def live(self):
        """A DVCLive logger writing metrics.json and plots/ here; dvc.yaml declares them."""
        from dvclive import Live
        return Live(dir=str(self.dir), dvcyaml=False, save_dvc_exp=False, report=None)

    def figure(self, fig: plt.Figure, name: str) -> Path:
        path = self.dir / "figures" / f"{name}.png"
        # Fixed metadata so the PNG bytes depend only on the pixels.
        fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
        return path

    def table(self, df: pd.DataFrame, name: str, index: bool = True) -> Path:
        path = self.dir / "tables" / f"{name}.csv"
        df.to_csv(path, index=index, float_format="%.6g")
        return path


def mean_std(values, digits: int = 2, scale: float = 1.0) -> str:
    """'mean ± std' (sample std, ddof=1) of `values` times `scale`."""
    v = np.asarray(values, dtype=float) * scale
    sd = v.std(ddof=1) if len(v) > 1 else float("nan")
    return f"{v.mean():.{digits}f} ± {sd:.{digits}f}"


def claims_table(rows: list[dict]) -> pd.DataFrame:
    """Each row: claim, evidence, verdict (one of VERDICTS)."""
    for r in rows:
        if set(r) != {"claim", "evidence", "verdict"}:
            raise ValueError(f"claim row needs keys claim, evidence, verdict; got {sorted(r)}")
        if r["verdict"] not in VERDICTS:
            raise ValueError(f"verdict {r['verdict']!r} for claim {r['claim']!r}: must be one of {VERDICTS}")
    return pd.DataFrame(rows, columns=["claim", "evidence", "verdict"])


def compare(a, b, paired: bool = False, alpha: float = 0.05) -> tuple[float, float, str]:
    """Is mean(a) above, below or tied with mean(b)? Returns (t, two-sided p, word).

    `paired=True` when a[i] and b[i] share seed-dependent conditions (initialisation,
    data order): the paired t-test then removes the seed-to-seed spread. Otherwise
    Welch's t-test. The word is 'tied' unless p < alpha.
    """
    from scipy import stats
    a, b = np.asarray(a, float), np.asarray(b, float)
    if min(len(a), len(b)) < 2:
        return float("nan"), float("nan"), "tied"
    res = stats.ttest_rel(a, b) if paired else stats.ttest_ind(a, b, equal_var=False)
    t, pval = float(res.statistic), float(res.pvalue)
    if not np.isfinite(pval):          # e.g. identical samples
        return t, 1.0, "tied"
    return t, pval, ("tied" if pval >= alpha else "higher" if t > 0 else "lower")

