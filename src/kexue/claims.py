"""Claims registered before the runs: `claims/NN_slug.yaml`, one file per chapter (DESIGN.md, "Verdicts").

Each entry fixes, before any data are seen, what a claims-table row will say and how it is judged:

    - id: improves_on_adam            # the key the notebook passes its Verdict under
      claim: AdaX improves on Adam     # the words shown in the table
      source: article                  # article | paper | reader | probe | anchor | identity
      rule: superiority                # the kexue.verdicts rule that decides it
      margin: 0.5                      # margin or target in absolute units (null: none)
      unit: " pts"
      seeds: 5                         # seeds (or pairs) at the default scale
      control: sgd_vs_adam             # id of the positive control the notebook computes (null: none)
      tuned: []                        # settings tuned toward this claim, named (e.g. ebm.image_alpha)
      changes:                         # every change of words, rule or margin after the first report
        - {date: 2026-12-03, what: margin, old: "10% of the observed mean", new: "8 FD", why: "..."}

The notebook reads it through `Report.registry`; `Report.claims` refuses a Verdict whose margin is
not the registered one, a missing or an unknown id. `git log claims/` is the history of every rule;
§0 of each chapter is generated from the `changes` lists (`rule_history`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from .verdicts import SUPPORTED, VERDICTS  # noqa: E402

SOURCES = ("article", "paper", "reader", "probe", "anchor", "identity")
CLAIM_SOURCES = ("article", "paper", "reader")     # what the front page counts as the article's claims
KEYS = {"id", "claim", "source", "rule", "margin", "unit", "seeds", "control", "tuned", "changes"}


class RegistryError(ValueError):
    pass


@dataclass
class Claim:
    id: str
    claim: str
    source: str
    rule: str
    margin: float | None = None
    unit: str = ""
    seeds: int | None = None
    control: str | None = None
    tuned: list = field(default_factory=list)
    changes: list = field(default_factory=list)


@dataclass
class Registry:
    chapter: str
    claims: list[Claim]

    def __getitem__(self, claim_id: str) -> Claim:
        for c in self.claims:
            if c.id == claim_id:
                return c
        raise KeyError(f"claim {claim_id!r} is not registered in claims/{self.chapter}.yaml "
                       f"(registered: {', '.join(c.id for c in self.claims)})")

    def margin(self, claim_id: str) -> float:
        """The registered margin or target of a claim (absolute units); an error if it has none."""
        m = self[claim_id].margin
        if m is None:
            raise RegistryError(f"claims/{self.chapter}.yaml: claim {claim_id!r} registers no margin")
        return m

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.claims]


def registry_path(chapter: str, root: Path | None = None) -> Path:
    from .config import ROOT
    return Path(root or ROOT) / "claims" / f"{chapter}.yaml"


def load_registry(chapter: str, root: Path | None = None, path: Path | None = None) -> Registry:
    """Read and validate `claims/CHAPTER.yaml` (or `path`); every error names the file, the entry and the value."""
    path = Path(path) if path is not None else registry_path(chapter, root)
    if not path.exists():
        raise RegistryError(f"{path}: no claims registry for chapter {chapter!r}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if data.get("chapter") != chapter:
        raise RegistryError(f"{path}: chapter is {data.get('chapter')!r}, expected {chapter!r}")
    entries = data.get("claims")
    if not isinstance(entries, list) or not entries:
        raise RegistryError(f"{path}: needs a non-empty list under 'claims'")
    out, seen = [], set()
    for i, e in enumerate(entries):
        where = f"{path}: claims[{i}]"
        if not isinstance(e, dict):
            raise RegistryError(f"{where}: must be a mapping, got {e!r}")
        unknown = set(e) - KEYS
        if unknown:
            raise RegistryError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(KEYS)})")
        for key in ("id", "claim", "source", "rule"):
            if not isinstance(e.get(key), str) or not e[key].strip():
                raise RegistryError(f"{where}: '{key}' must be a non-empty string, got {e.get(key)!r}")
        if e["id"] in seen:
            raise RegistryError(f"{where}: duplicate id {e['id']!r}")
        seen.add(e["id"])
        if e["source"] not in SOURCES:
            raise RegistryError(f"{where} ({e['id']}): source {e['source']!r} must be one of {SOURCES}")
        m = e.get("margin")
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m)):
            raise RegistryError(f"{where} ({e['id']}): margin {m!r} must be a finite number or null "
                                "(YAML reads 1e-3 as a string: write 1.0e-3)")
        s = e.get("seeds")
        if s is not None and (isinstance(s, bool) or not isinstance(s, int) or s < 1):
            raise RegistryError(f"{where} ({e['id']}): seeds {s!r} must be an integer >= 1 or null")
        changes = e.get("changes") or []
        for j, ch in enumerate(changes):
            if not isinstance(ch, dict) or not {"date", "what", "why"} <= set(ch):
                raise RegistryError(f"{where} ({e['id']}): changes[{j}] needs date, what, why (old, new optional)")
        out.append(Claim(e["id"], " ".join(e["claim"].split()), e["source"], e["rule"],
                         None if m is None else float(m), e.get("unit") or "", s, e.get("control"),
                         list(e.get("tuned") or []), list(changes)))
    return Registry(chapter, out)


def rule_history(registry: Registry) -> list[dict]:
    """Every registered change, claim by claim (registry order), oldest first: date, claim id, what changed,
    old -> new, why."""
    rows = []
    for c in registry.claims:
        for ch in c.changes:
            rows.append({"date": str(ch["date"]), "claim": c.id, "what": ch["what"],
                         "old → new": f"{ch.get('old', '')} → {ch.get('new', '')}".strip(" →"), "why": ch["why"]})
    order = {c.id: i for i, c in enumerate(registry.claims)}
    return sorted(rows, key=lambda r: (order[r["claim"]], r["date"]))       # by claim, then oldest first


def is_article_claim(source: str) -> bool:
    return source in CLAIM_SOURCES


# --- counts: one generated source for every count on every page (front page, README, book) ---

def claim_rows(claims: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the article's, papers' and readers' claims; the probes, anchors and identities) of a claims table.
    A table without a `source` column (written before the registry) counts every row as a claim."""
    if not claims.exists():
        empty = pd.DataFrame(columns=["verdict", "reason", "source"])
        return empty, empty
    df = pd.read_csv(claims, keep_default_na=False)
    if "source" not in df.columns:
        return df, df.iloc[0:0]
    is_claim = df["source"].isin(CLAIM_SOURCES)
    return df[is_claim], df[~is_claim]


def verdict_counts(claims: Path) -> dict[str, int]:
    """Counts by verdict of the article's (papers', readers') claims only."""
    rows, _ = claim_rows(claims)
    counts = rows["verdict"].value_counts()
    return {v: int(counts.get(v, 0)) for v in VERDICTS} if len(rows) else {}


def counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n) if counts else ""


def claims_summary(claims: Path) -> str:
    """'3 supported; 1 contradicted (other_way); 2 inconclusive (underpowered, straddles) — and 4 probes,
    anchors and identities (4 supported)': one generated source for every count on every page."""
    rows, other = claim_rows(claims)
    if not len(rows) and not len(other):
        return ""

    old_rules = "source" not in rows.columns

    def by_verdict(df):
        parts = []
        words = list(VERDICTS) + sorted(set(df["verdict"]) - set(VERDICTS))     # old words, if any, still counted
        for v in words:
            sub = df[df["verdict"] == v]
            if not len(sub):
                continue
            reasons = ""
            if "reason" in sub.columns and v != SUPPORTED:
                rc = sub["reason"].value_counts()
                reasons = " (" + ", ".join(f"{r}" + (f" ×{k}" if k > 1 else "") for r, k in rc.items()) + ")"
            parts.append(f"{len(sub)} {v}{reasons}")
        return "; ".join(parts)

    text = f"{len(rows)} claims: {by_verdict(rows)}"
    if old_rules:
        text = (f"{len(rows)} rows judged before the claims registry, with the old rules (rerun pending; "
                f"claims, probes and identities not told apart): {by_verdict(rows)}")
    if len(other):
        kinds = other["source"].value_counts()
        plural = {"identity": "identities", "probe": "probes", "anchor": "anchors"}
        text += (" — and " + ", ".join(f"{k} {plural.get(s, s + 's') if k > 1 else s}" for s, k in kinds.items())
                 + f": {by_verdict(other)}")
    return text
