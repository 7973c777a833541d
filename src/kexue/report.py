"""One place for what every chapter writes and shows: figures, tables, notes, DVCLive metrics, claims.

A chapter's report folder (`reports/CHAPTER/`, or the runner's staging folder):

    CHAPTER.ipynb, CHAPTER.html   written by the runner (with params.yaml and status.json)
    metrics.json                  DVCLive summary (dvc metrics)
    plots/metrics/*.tsv           DVCLive step curves (dvc plots)
    figures/*.png, tables/*.csv   written here
    summary.md                    one generated line for the front page (`Report.summary`)
    findings.md                   generated bullets for the front page and README (`Report.finding`)

In a notebook every figure and table is also *shown* where the text discusses it
(`figure`, `show`, `claims`), and every interpretation that quotes a number is
generated Markdown (`note`, `finding`), so text and measurement cannot drift.
DESIGN.md, "Reports", gives the conventions.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")   # figures are rendered to PNG here and shown as images (deterministic bytes)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .config import ROOT  # noqa: E402
from .verdicts import VERDICTS  # noqa: E402  (re-exported: claims_table checks against it)


def _display(obj) -> None:
    """IPython's display inside a kernel; nothing outside one (scripts, tests)."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:      # pragma: no cover - IPython is a dependency
        return
    if get_ipython() is not None:
        display(obj)


def fmt(x, sig: int = 3) -> str:
    """A number with `sig` significant figures, readable: 0.000123 -> '1.23e-04', 1234.5 -> '1.23e+03'
    only past 1e5; integers stay integers; NaN -> 'n/a'."""
    if x is None:
        return "n/a"
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}" if abs(int(x)) >= 10_000 else str(int(x))
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(x):
        return "n/a" if math.isnan(x) else ("∞" if x > 0 else "−∞")
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    if mag >= 5 or mag < -3:
        return f"{x:.{sig - 1}e}"
    decimals = max(sig - 1 - mag, 0)
    return f"{x:,.{decimals}f}" if mag >= 4 else f"{x:.{decimals}f}"


def format_table(df: pd.DataFrame, sig: int = 3) -> pd.DataFrame:
    """Every float cell as `fmt(x, sig)`; other cells as they are. For display, never for CSV."""
    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]) or pd.api.types.is_integer_dtype(out[col]):
            out[col] = [fmt(v, sig) for v in out[col]]
    return out


def table_html(df: pd.DataFrame, sig: int = 3, index: bool | None = None) -> str:
    """An HTML table (cells escaped, numbers with `sig` significant figures).

    HTML, not Markdown: a cell holding `|` or `*` cannot break it. The index is shown
    only when it carries names (not a plain 0..n-1 range).
    """
    if index is None:
        index = not isinstance(df.index, pd.RangeIndex)
    return format_table(df, sig).to_html(index=index, escape=True, border=0, classes="kexue-table",
                                         na_rep="n/a")


class _HTML:
    """Minimal rich-display object: what `IPython.display.HTML` does, without its warnings."""
    def __init__(self, html: str):
        self.html = html

    def _repr_html_(self):
        return self.html

    def __repr__(self):          # text/plain: stable across runs (no memory address)
        return "<HTML table>"


class _Markdown:
    def __init__(self, md: str):
        self.md = md

    def _repr_markdown_(self):
        return self.md

    def __repr__(self):
        return self.md


class _PNG:
    def __init__(self, data: bytes):
        self.data = data

    def _repr_png_(self):
        return self.data

    def __repr__(self):
        return f"<PNG image, {len(self.data)} bytes>"


def _flatten(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}: DVCLive's nested summary as dotted metric names."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif k != "step":
            out[f"{prefix}{k}"] = v
    return out


def progress(iterable=None, desc: str = "", total: int | None = None, **kw):
    """A progress bar on the terminal that runs the stage, never in the notebook's outputs.

    Inside a kernel, `sys.__stderr__` is the kernel process's own stderr, which the
    runner's terminal inherits; the notebook only captures `sys.stderr`. When that stream
    is not a terminal (CI logs, `dvc exp run` in a queue, redirected output) the same
    progress is printed as plain lines, one every `mininterval` seconds (default 30), and
    one when the loop ends.
    """
    from tqdm.std import tqdm
    stream = kw.pop("file", None) or (sys.__stderr__ if sys.__stderr__ is not None else sys.stderr)
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        kw.setdefault("disable", None)          # None: tqdm disables itself on a non-tty stream
        return tqdm(iterable, desc=desc, total=total, file=stream, leave=False, dynamic_ncols=True,
                    mininterval=kw.pop("mininterval", 1.0), **kw)

    class Lines:
        """tqdm's redraws ('\r' + status) turned into one plain line each; blank clears dropped."""
        def write(self, text):
            text = text.replace("\r", "").replace("\x1b[A", "").strip()
            if text:
                stream.write(text + "\n")

        def flush(self):
            stream.flush()

    kw.setdefault("disable", False)
    return tqdm(iterable, desc=desc, total=total, file=Lines(), leave=True, ncols=100, ascii=True,
                mininterval=kw.pop("mininterval", 30.0), **kw)


@dataclass
class Report:
    """Paths of one chapter's report folder, created on first use, and what the notebook shows."""
    dir: Path
    _figures: int = field(default=0, init=False, repr=False)
    _findings: list = field(default_factory=list, init=False, repr=False)

    def __post_init__(self):
        self.dir = Path(self.dir)
        if not self.dir.is_absolute():
            self.dir = ROOT / self.dir
        (self.dir / "figures").mkdir(parents=True, exist_ok=True)
        (self.dir / "tables").mkdir(parents=True, exist_ok=True)
        for stale in ("findings.md", "summary.md", "captions.json"):
            (self.dir / stale).unlink(missing_ok=True)

    def live(self):
        """A DVCLive logger writing metrics.json and plots/ here; dvc.yaml declares them."""
        from dvclive import Live
        return Live(dir=str(self.dir), dvcyaml=False, save_dvc_exp=False, report=None)

    def figure(self, fig: plt.Figure, name: str, caption: str = "") -> None:
        """Save `figures/NAME.png`, show it inline with its caption, close the figure.

        The image shown is the saved file's bytes, so notebook and PNG cannot differ.
        """
        path = self.dir / "figures" / f"{name}.png"
        # Fixed metadata so the PNG bytes depend only on the pixels.
        fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        self._figures += 1
        captions_file = self.dir / "captions.json"     # the front page shows them too
        captions = json.loads(captions_file.read_text()) if captions_file.exists() else {}
        captions[name] = caption
        captions_file.write_text(json.dumps(captions, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
        _display(_PNG(path.read_bytes()))
        label = f"**Figure {self._figures}** (`figures/{name}.png`)"
        _display(_Markdown(f"{label}. {caption}" if caption else label))

    def table(self, df: pd.DataFrame, name: str, index: bool = True) -> Path:
        """Save `tables/NAME.csv` (full precision); see `show` for the reader's view."""
        path = self.dir / "tables" / f"{name}.csv"
        df.to_csv(path, index=index, float_format="%.6g")
        return path

    def show(self, df: pd.DataFrame, name: str | None = None, caption: str = "", sig: int = 3,
             index: bool | None = None) -> pd.DataFrame:
        """Show `df` as an HTML table with readable numbers; save it as `tables/NAME.csv` when named."""
        if name is not None:
            self.table(df, name, index=True if index is None else index)
        html = table_html(df, sig=sig, index=index)
        if caption or name:
            where = f" (`tables/{name}.csv`)" if name else ""
            _display(_Markdown(f"*{caption}*{where}" if caption else f"`tables/{name}.csv`"))
        _display(_HTML(html))
        return df

    def claims(self, rows: list[dict]) -> pd.DataFrame:
        """Validate the claims table, save `tables/claims.csv`, show it as an HTML table."""
        df = claims_table(rows)
        self.table(df, "claims", index=False)
        _display(_HTML(table_html(df, index=False)))
        return df

    def verify(self, claims: pd.DataFrame, metrics: dict, rerun_dir: Path) -> pd.DataFrame:
        """Compare this run with the rerun on disjoint seeds (`kexue.verify`, kept in `rerun_dir`).

        Saves `tables/verify.csv` (claim, verdict, verdict_on_rerun) and
        `tables/verify_metrics.csv` (metric, value, value_on_rerun, change, change / seed sd when
        the chapter logs `NAME_sd`), shows both, and says how many verdicts survived.
        """
        rerun_dir = Path(rerun_dir)
        if not (rerun_dir / "claims.csv").exists():
            df = claims[["claim", "verdict"]].assign(verdict_on_rerun="not rerun yet")
            self.table(df, "verify", index=False)
            self.note(f"No rerun with disjoint seeds yet (`python -m kexue.verify`, in `{rerun_dir.name}/`).")
            return df
        rerun = pd.read_csv(rerun_dir / "claims.csv")
        df = claims[["claim", "verdict"]].merge(rerun[["claim", "verdict"]].rename(
            columns={"verdict": "verdict_on_rerun"}), on="claim", how="left").fillna({"verdict_on_rerun": "missing"})
        self.table(df, "verify", index=False)
        same = int((df.verdict == df.verdict_on_rerun).sum())
        seed = ""
        if (rerun_dir / "params.yaml").exists():
            import yaml
            seed = f" (base seed {yaml.safe_load((rerun_dir / 'params.yaml').read_text())['common']['seed']})"
        self.note(f"**Verify.** The chapter was rerun with a disjoint set of seeds{seed}: "
                  f"{same} of {len(df)} verdicts are unchanged"
                  + ("." if same == len(df) else "; the changed ones are not robust at this scale."))
        _display(_HTML(table_html(df, index=False)))
        flat_now, flat_re = _flatten(metrics), _flatten(json.loads((rerun_dir / "metrics.json").read_text())
                                                        if (rerun_dir / "metrics.json").exists() else {})
        rows = []
        for name, value in flat_now.items():
            if name.endswith("_sd") or name not in flat_re or not isinstance(value, (int, float)):
                continue
            sd = flat_now.get(name + "_sd")
            change = flat_re[name] - value
            rows.append({"metric": name, "value": value, "value on rerun": flat_re[name], "change": change,
                         "change / seed sd": change / sd if sd else float("nan")})
        if rows:
            m = pd.DataFrame(rows)
            self.table(m, "verify_metrics", index=False)
            self.show(m, caption="Each metric on the rerun with disjoint seeds; the change in units of the "
                                 "spread across seeds where the chapter logs it")
        return df

    def note(self, md: str) -> None:
        """Generated Markdown: an interpretation whose numbers come from the measurement."""
        _display(_Markdown(md))

    def finding(self, md: str) -> None:
        """A headline result: shown here, and collected in `findings.md` (front page, README)."""
        self.note(md)
        self._findings.append(" ".join(md.split()))
        (self.dir / "findings.md").write_text("".join(f"- {f}\n" for f in self._findings), encoding="utf-8")

    def summary(self, md: str) -> None:
        """The chapter's one-line finding for the front page (`summary.md`)."""
        self.note(md)
        (self.dir / "summary.md").write_text(" ".join(md.split()) + "\n", encoding="utf-8")


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

