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
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

RERUN_ENV = "KEXUE_RERUN"        # set by kexue.verify while it runs the rerun

import matplotlib

matplotlib.use("Agg")   # figures are rendered to PNG here and shown as images (deterministic bytes)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .config import ROOT  # noqa: E402
from .figures import DPI, measure, png_metadata  # noqa: E402
from .fmt import fmt, format_table, mean_std  # noqa: E402,F401  (re-exported for the notebooks)
from .verdicts import VERDICTS  # noqa: E402


def _display(obj) -> None:
    """IPython's display inside a kernel; nothing outside one (scripts, tests)."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:      # pragma: no cover - IPython is a dependency
        return
    if get_ipython() is not None:
        display(obj)


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
    chapter: str | None = None        # default: the folder's name (a staging folder's too)
    registry_file: Path | None = None  # default: claims/CHAPTER.yaml
    _figures: int = field(default=0, init=False, repr=False)
    _registry: object = field(default=None, init=False, repr=False)
    _findings: list = field(default_factory=list, init=False, repr=False)

    def __post_init__(self):
        self.dir = Path(self.dir)
        if not self.dir.is_absolute():
            self.dir = ROOT / self.dir
        if not self.chapter:
            name = self.dir.name
            self.chapter = name.split(".staging-", 1)[1] if name.startswith(".staging-") else name
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
        if not caption.strip():
            raise ValueError(f"figure {name!r} has no caption: the book's alt text is made from it")
        path = self.dir / "figures" / f"{name}.png"
        # The house style's facts (kexue.figures) travel in the PNG; no "Software" entry, so the
        # bytes depend only on the pixels and those facts.
        facts = measure(fig)
        fig.savefig(path, dpi=DPI, metadata=png_metadata(facts))
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

    @property
    def registry(self):
        """The chapter's claims registry, `claims/CHAPTER.yaml` (`kexue.claims`)."""
        if self._registry is None:
            from .claims import load_registry
            self._registry = load_registry(self.chapter, path=self.registry_file)
        return self._registry

    def rule_history(self) -> None:
        """§0: every registered change of a claim's words, rule or margin (from `claims/CHAPTER.yaml`)."""
        from .claims import rule_history
        rows = rule_history(self.registry)
        if not rows:
            self.note("No claim's words, rule or margin has changed since it was registered.")
            return
        self.note(f"Changes to the registered claims (`claims/{self.chapter}.yaml`; `git log` of that file "
                  "has every edit):")
        _display(_HTML(table_html(pd.DataFrame(rows), index=False)))

    def claims(self, verdicts: dict, controls: dict | None = None, rerun_dir: Path | None = None) -> pd.DataFrame:
        """The claims table: one row per registered claim, in the registry's order.

        `verdicts`: claim id -> `kexue.verdicts.Verdict`; `controls`: control id -> the positive control's
        Verdict (a claim whose testbed failed its control cannot be contradicted). Each row's words,
        source and margin come from the registry; a Verdict decided with another margin is an error.
        With a rerun on disjoint seeds in `rerun_dir` (default `reports/CHAPTER/rerun`), a verdict that
        differs there becomes inconclusive (`unstable_on_rerun`). Saves `tables/claims.csv` and
        `tables/verify.csv`, shows the table."""
        from . import verdicts as V
        reg = self.registry
        controls = dict(controls or {})
        missing, unknown = set(reg.ids) - set(verdicts), set(verdicts) - set(reg.ids)
        if missing or unknown:
            raise ValueError(f"claims/{self.chapter}.yaml: verdicts missing for {sorted(missing)}, "
                             f"unregistered ids {sorted(unknown)}")
        rerun_dir = Path(rerun_dir) if rerun_dir is not None else ROOT / "reports" / self.chapter / "rerun"
        rerun = {}
        # A run made by kexue.verify is the rerun itself: it is not compared with an older rerun.
        if os.environ.get(RERUN_ENV) != "1" and (rerun_dir / "claims.csv").exists():
            old = pd.read_csv(rerun_dir / "claims.csv", keep_default_na=False)
            if "id" in old.columns and "verdict_this_run" in old.columns:
                rerun = {r["id"]: (r["verdict_this_run"], r["reason_this_run"]) for _, r in old.iterrows()}
        rows = []
        for c in reg.claims:
            v = verdicts[c.id]
            if not isinstance(v, V.Verdict):
                raise TypeError(f"claim {c.id!r}: expected a kexue.verdicts.Verdict, got {type(v).__name__}")
            if c.margin is not None and (v.margin is None or not math.isclose(v.margin, c.margin, rel_tol=1e-9)):
                raise ValueError(f"claim {c.id!r}: decided with margin {v.margin!r}, registered {c.margin!r} "
                                 f"(claims/{self.chapter}.yaml)")
            control_text = ""
            if c.control:
                if c.control not in controls:
                    raise ValueError(f"claim {c.id!r}: its positive control {c.control!r} was not computed")
                ctl = controls[c.control]
                # the control's own detectable effect is the spread of its pair, not the testbed's
                # resolution on the claim (that is the row's `detectable`): left out here
                control_text = (f"{'passed' if ctl.verdict == V.SUPPORTED else 'failed'}: "
                                f"{ctl.evidence.split('; detectable')[0]}")
                v = V.with_control(v, ctl, equivalence=c.rule.startswith(("equivalence", "non-inferiority")))
            on_rerun = rerun.get(c.id)
            final, reason = V.replicate(v.verdict, v.reason, on_rerun[0] if on_rerun else None)
            rows.append({
                "id": c.id, "claim": c.claim, "source": c.source, "verdict": final, "reason": reason,
                "n": v.n if v.n is not None else "", "estimate": v.estimate,
                "interval": v.interval_text(), "margin": "" if c.margin is None else f"{fmt(c.margin)}{c.unit}",
                "detectable": v.detectable if math.isfinite(v.detectable) else float("nan"),
                "control": control_text, "evidence": v.evidence + (f"; tuned toward this claim: {', '.join(c.tuned)}"
                                                                   if c.tuned else ""),
                "verdict_this_run": v.verdict, "reason_this_run": v.reason,
                "verdict_on_rerun": on_rerun[0] if on_rerun else "not rerun yet",
                "p_support": v.p_support, "p_against": v.p_against})
        df = pd.DataFrame(rows)
        self.table(df, "claims", index=False)
        self.table(df[["id", "claim", "verdict_this_run", "verdict_on_rerun", "verdict", "reason"]].rename(
            columns={"verdict_this_run": "verdict", "verdict": "final verdict", "reason": "final reason"}),
            "verify", index=False)
        shown = df[["claim", "source", "verdict", "reason", "n", "interval", "margin", "detectable", "control",
                    "evidence"]].copy()
        shown["detectable"] = [fmt(x) if math.isfinite(x) else "" for x in df["detectable"]]
        _display(_HTML(table_html(shown, index=False)))
        unstable = int((df.reason == "unstable_on_rerun").sum())
        if rerun:
            self.note(f"Each verdict above is this run's, checked against the rerun on disjoint seeds: "
                      f"{len(df) - unstable} of {len(df)} agree; "
                      + (f"{unstable} changed and are inconclusive (`unstable_on_rerun`)." if unstable else
                         "none changed."))
        return df

    def verify(self, claims: pd.DataFrame, metrics: dict, rerun_dir: Path, what: str = "with a disjoint set of seeds",
               per_sd: bool = True) -> pd.DataFrame:
        """Show how this run compares with the rerun (`kexue.verify`, kept in `rerun_dir`; `what` says how it
        differs, e.g. "with a disjoint set of seeds"): the verdicts (decided in `claims`) and
        `tables/verify_metrics.csv` (metric, value, value_on_rerun, change, and with `per_sd` change / seed sd
        when the chapter logs `NAME_sd`: leave it out when the rerun changes something other than the seeds)."""
        rerun_dir = Path(rerun_dir)
        df = pd.read_csv(self.dir / "tables" / "verify.csv", keep_default_na=False)
        if not df["verdict_on_rerun"].isin(VERDICTS).any():
            self.note(f"No rerun {what} yet (`python -m kexue.verify`, in `{rerun_dir.name}/`).")
            return df
        same = int((df["verdict"] == df["verdict_on_rerun"]).sum())
        seed = ""
        if (rerun_dir / "params.yaml").exists():
            import yaml
            seed = f" (base seed {yaml.safe_load((rerun_dir / 'params.yaml').read_text())['common']['seed']})"
        self.note(f"**Verify.** The chapter was rerun {what}{seed}: "
                  f"{same} of {len(df)} verdicts are the same"
                  + ("." if same == len(df) else "; the others are *inconclusive at this scale* "
                     "(`unstable_on_rerun`) in the claims table."))
        _display(_HTML(table_html(df[["claim", "verdict", "verdict_on_rerun", "final verdict"]], index=False)))
        flat_now, flat_re = _flatten(metrics), _flatten(json.loads((rerun_dir / "metrics.json").read_text())
                                                        if (rerun_dir / "metrics.json").exists() else {})
        rows = []
        for name, value in flat_now.items():
            if name.endswith("_sd") or name not in flat_re or not isinstance(value, (int, float)):
                continue
            sd = flat_now.get(name + "_sd")
            change = flat_re[name] - value
            row = {"metric": name, "value": value, "value on rerun": flat_re[name], "change": change}
            if per_sd:
                row["change / seed sd"] = change / sd if sd else float("nan")
            rows.append(row)
        if rows:
            m = pd.DataFrame(rows)
            self.table(m, "verify_metrics", index=False)
            self.show(m, caption=f"Each metric on the rerun {what}"
                                 + ("; the change in units of the spread across seeds where the chapter logs it"
                                    if per_sd else ""))
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
