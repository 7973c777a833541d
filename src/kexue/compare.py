"""Two runs side by side: `python -m kexue.compare [A] [B] [--md]`.

A and B are each the workspace (`workspace`, A's default), a git revision (`HEAD`, B's default;
a branch, a commit) or a DVC experiment's name (`dvc exp show` lists them; `dvc exp run --queue`
experiments too). Shown: only the parameters that differ (`params.yaml`, and the values each
chapter ran with, `reports/CHAPTER/params.yaml`, which include the scale preset), then for every
chapter its headline metrics and its verdicts, A beside B, changed rows marked. `--md` prints
Markdown (for a pull request or a note); the default is a plain table for the terminal.

`dvc exp show` lists every metric of every chapter (hundreds of columns); this is the short
reading. The numbers come from the committed files of each side, nothing is rerun.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from .chapters import CHAPTERS
from .config import ROOT

WORKSPACE = "workspace"

# The metrics a reader looks at first, per chapter (regular expressions over the flattened
# names of `metrics.json`; spreads `_sd`/`_std` are shown beside their mean, not as rows).
HEADLINE = {
    "01_single_loss_gan": [r"toy\.\w+\.\w+\.modes", r"toy\.\w+\.\w+\.high_quality", r"fashion\.\w+\.fd_mean"],
    "02_energy_based_model": [r"fashion\.fd_\w+", r"toy\.\w+\.\w+\.rkl"],
    "03_skip_tuning": [r"baseline_fd_nfe35", r"nfe_speedup", r"tuned_match_nfe", r"untuned_match_nfe"],
    "04_adax": [r"long_run\.steps", r"final\.[^.]+\.test_acc_mean"],
    "05_simbert": [r"retrieval\.[^.]+\.mrr", r"generation\.[^.]+\.chrf"],
}
SPREAD = ("_sd", "_std")


class CompareError(ValueError):
    """A side that names no workspace, revision or experiment."""


def _git(*args: str, root: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def experiments(root: Path = ROOT) -> dict[str, str]:
    """DVC experiment name -> commit (experiments are git refs under refs/exps/)."""
    try:
        out = _git("for-each-ref", "refs/exps", "--format=%(refname) %(objectname)", root=root)
    except (OSError, subprocess.CalledProcessError):
        return {}
    exps = {}
    for line in out.splitlines():
        ref, sha = line.split()
        parts = ref.split("/")     # refs/exps/<2 hex>/<rest of the baseline sha>/<name>; queue stashes differ
        if len(parts) == 5 and len(parts[2]) == 2 and all(c in "0123456789abcdef" for c in parts[2] + parts[3]):
            exps[parts[4]] = sha
    return exps


@dataclass
class Side:
    """One side of the comparison: where its files are read from."""
    label: str
    rev: str | None          # None: the working tree
    root: Path = ROOT

    def read(self, path: str) -> str | None:
        if self.rev is None:
            p = self.root / path
            return p.read_text() if p.is_file() else None
        try:
            return _git("show", f"{self.rev}:{path}", root=self.root)
        except subprocess.CalledProcessError:
            return None


def resolve(spec: str, root: Path = ROOT) -> Side:
    """`workspace`, an experiment name, or a git revision -> a Side; a clear error otherwise."""
    if spec == WORKSPACE:
        return Side(WORKSPACE, None, root)
    exps = experiments(root)
    if spec in exps:
        return Side(f"{spec} (experiment {exps[spec][:7]})", exps[spec], root)
    try:
        sha = _git("rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}", root=root).strip()
    except (OSError, subprocess.CalledProcessError):
        sha = ""
    if not sha:
        known = ", ".join(sorted(exps)) or "none"
        raise CompareError(f"{spec!r} is neither 'workspace', a git revision nor a DVC experiment "
                           f"(experiments here: {known})")
    return Side(f"{spec} ({sha[:7]})" if not sha.startswith(spec) else spec[:12], sha, root)


def flatten(d, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _yaml(text: str | None) -> dict:
    return flatten(yaml.safe_load(text) or {}) if text else {}


def changed_params(a: Side, b: Side) -> list[tuple[str, object, object]]:
    """(name, A, B) for every parameter that differs: asked (`params.yaml`) and ran (per chapter)."""
    rows = []
    pa, pb = _yaml(a.read("params.yaml")), _yaml(b.read("params.yaml"))
    for k in sorted(set(pa) | set(pb)):
        if pa.get(k) != pb.get(k):
            rows.append((k, pa.get(k), pb.get(k)))
    asked = {r[0] for r in rows}
    for chapter in CHAPTERS:
        ra = _yaml(a.read(f"reports/{chapter}/params.yaml"))
        rb = _yaml(b.read(f"reports/{chapter}/params.yaml"))
        for k in sorted(set(ra) | set(rb)):
            if ra.get(k) != rb.get(k) and k not in asked:
                rows.append((f"{k} (ran, {chapter})", ra.get(k), rb.get(k)))
    return rows


def headline_metrics(chapter: str, metrics: dict) -> dict[str, tuple[object, object]]:
    """name -> (value, spread or None), for the chapter's headline metrics."""
    patterns = [re.compile(p + "$") for p in HEADLINE.get(chapter, [])]
    out = {}
    for k, v in metrics.items():
        if k.endswith(SPREAD) or not isinstance(v, (int, float)):
            continue
        if not patterns or any(p.match(k) for p in patterns):
            base = k[: -len("_mean")] if k.endswith("_mean") else k      # test_acc_mean's spread: test_acc_std
            spread = next((metrics[n] for n in (*(k + s for s in SPREAD), *(base + s for s in SPREAD))
                           if n in metrics), None)
            out[k] = (v, spread)
    return out


def verdicts(side: Side, chapter: str) -> dict[str, str]:
    text = side.read(f"reports/{chapter}/tables/claims.csv")
    if not text:
        return {}
    return {row["claim"]: row["verdict"] for row in csv.DictReader(io.StringIO(text))}


def _num(x) -> str:
    from .report import fmt
    return "—" if x is None else fmt(x)


def _with_spread(pair) -> str:
    if pair is None:
        return "—"
    v, sd = pair
    return _num(v) + (f" ± {_num(sd)}" if sd is not None else "")


def _short(text: str, n: int = 70) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def comparison(a: Side, b: Side) -> list[tuple[str, list[str], list[list[str]]]]:
    """The sections of the comparison: (title, header, rows); rows that differ end with a mark."""
    sections = []
    params = changed_params(a, b)
    sections.append(("Parameters that differ", ["parameter", a.label, b.label],
                     [[k, _num(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x),
                       _num(y) if isinstance(y, (int, float)) and not isinstance(y, bool) else str(y)]
                      for k, x, y in params] or [["(none)", "", ""]]))
    for chapter in CHAPTERS:
        ma = flatten(json.loads(a.read(f"reports/{chapter}/metrics.json") or "{}"))
        mb = flatten(json.loads(b.read(f"reports/{chapter}/metrics.json") or "{}"))
        ha, hb = headline_metrics(chapter, ma), headline_metrics(chapter, mb)
        rows = []
        for k in sorted(set(ha) | set(hb)):
            x, y = ha.get(k), hb.get(k)
            mark = "" if (x and y and x[0] == y[0]) else "*"
            rows.append([k, _with_spread(x), _with_spread(y), mark])
        va, vb = verdicts(a, chapter), verdicts(b, chapter)
        for claim in list(va) + [c for c in vb if c not in va]:
            x, y = va.get(claim, "—"), vb.get(claim, "—")
            rows.append([f"verdict: {_short(claim)}", x, y, "" if x == y else "*"])
        if not rows:
            rows = [["(no report on either side)", "", "", ""]]
        sections.append((chapter, ["metric / claim", a.label, b.label, "changed"], rows))
    return sections


def to_markdown(a: Side, b: Side, sections) -> str:
    def cell(s):
        return str(s).replace("|", "\\|")
    lines = [f"# {a.label} vs {b.label}", ""]
    for title, header, rows in sections:
        lines += [f"## {title}", "", "| " + " | ".join(map(cell, header)) + " |",
                  "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def to_terminal(a: Side, b: Side, sections) -> str:
    lines = [f"{a.label}  vs  {b.label}", ""]
    for title, header, rows in sections:
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        lines += [title, "=" * len(title)]
        for r in [header, *rows]:
            lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", nargs="?", default=WORKSPACE, help="workspace (default), a git revision or an experiment")
    ap.add_argument("b", nargs="?", default="HEAD", help="the other side (default HEAD)")
    ap.add_argument("--md", action="store_true", help="Markdown instead of a terminal table")
    args = ap.parse_args(argv)
    try:
        a, b = resolve(args.a), resolve(args.b)
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    sections = comparison(a, b)
    print(to_markdown(a, b, sections) if args.md else to_terminal(a, b, sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
