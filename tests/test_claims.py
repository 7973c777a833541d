"""kexue.claims: the registry of claims (claims/NN_slug.yaml) and its tie to the committed reports."""
import math

import pandas as pd
import pytest

from kexue.chapters import CHAPTERS
from kexue.claims import SOURCES, RegistryError, load_registry, rule_history
from kexue.config import ROOT
from kexue.fmt import fmt
from kexue.verdicts import REASONS, VERDICTS


def _write(tmp_path, body):
    f = tmp_path / "c.yaml"
    f.write_text("chapter: 99_x\nclaims:\n" + body)
    return f


def test_registry_loads_and_validates(tmp_path):
    f = _write(tmp_path, "  - {id: a, claim: 'A  claim', source: article, rule: superiority, margin: 0.5, seeds: 5,\n"
                         "     changes: [{date: 2026-12-03, what: margin, old: 10%, new: 0.5, why: fixed before}]}\n")
    reg = load_registry("99_x", path=f)
    assert reg.ids == ["a"] and reg.margin("a") == 0.5 and reg["a"].claim == "A claim"
    assert rule_history(reg) == [{"date": "2026-12-03", "claim": "a", "what": "margin", "old → new": "10% → 0.5",
                                  "why": "fixed before"}]
    with pytest.raises(KeyError, match="not registered"):
        reg["b"]


@pytest.mark.parametrize("body, match", [
    ("  - {id: a, claim: c, source: blog, rule: r}\n", "source 'blog'"),
    ("  - {id: a, claim: c, source: article, rule: r, margin: 1e-3}\n", "YAML reads 1e-3 as a string"),
    ("  - {id: a, claim: c, source: article, rule: r}\n  - {id: a, claim: d, source: probe, rule: r}\n", "duplicate id"),
    ("  - {id: a, claim: c, source: article, rule: r, colour: red}\n", "unknown keys"),
    ("  - {id: a, claim: '', source: article, rule: r}\n", "'claim' must be a non-empty string"),
    ("  - {id: a, claim: c, source: article, rule: r, changes: [{date: 1}]}\n", "needs date, what, why"),
])
def test_registry_errors_name_the_entry(tmp_path, body, match):
    with pytest.raises(RegistryError, match=match):
        load_registry("99_x", path=_write(tmp_path, body))


def test_registry_of_another_chapter_is_refused(tmp_path):
    with pytest.raises(RegistryError, match="expected '01_single_loss_gan'"):
        load_registry("01_single_loss_gan", path=_write(tmp_path, "  - {id: a, claim: c, source: article, rule: r}\n"))


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_chapter_registers_its_claims(chapter):
    reg = load_registry(chapter)
    assert {c.source for c in reg.claims} <= set(SOURCES)
    assert any(c.source in ("article", "paper", "reader") for c in reg.claims)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_committed_claims_table_comes_from_the_registry(chapter):
    """Every row of reports/CHAPTER/tables/claims.csv is a registered claim, in order, with its words,
    source and margin; verdicts and reasons are the rules' words."""
    table = ROOT / "reports" / chapter / "tables" / "claims.csv"
    df = pd.read_csv(table, keep_default_na=False)
    assert "id" in df.columns, f"{chapter}: the committed report predates the claims registry: rerun it"
    reg = load_registry(chapter)
    assert list(df["id"]) == reg.ids
    assert list(df["claim"]) == [c.claim for c in reg.claims]
    assert list(df["source"]) == [c.source for c in reg.claims]
    for c, (_, row) in zip(reg.claims, df.iterrows()):
        assert row["margin"] == ("" if c.margin is None else f"{fmt(c.margin)}{c.unit}"), c.id
        assert row["verdict"] in VERDICTS and REASONS[row["reason"]][0] == row["verdict"], c.id
        assert (row["control"] != "") == bool(c.control), c.id
        if row["verdict_on_rerun"] in VERDICTS and row["verdict_on_rerun"] != row["verdict_this_run"]:
            assert row["reason"] == "unstable_on_rerun", c.id


def test_claims_summary_counts_the_articles_claims_apart(tmp_path):
    from kexue.claims import claims_summary, verdict_counts
    f = tmp_path / "claims.csv"
    pd.DataFrame({"id": range(6), "claim": list("abcdef"),
                  "source": ["article", "paper", "reader", "probe", "anchor", "probe"],
                  "verdict": ["supported", "contradicted", "inconclusive at this scale", "supported", "supported",
                              "contradicted"],
                  "reason": ["significant", "other_way", "underpowered", "significant", "equivalent",
                             "inside_margin"]}).to_csv(f, index=False)
    assert claims_summary(f) == ("3 claims: 1 supported; 1 contradicted (other_way); 1 inconclusive at this scale "
                                 "(underpowered) — and 2 probes, 1 anchor: 2 supported; 1 contradicted (inside_margin)")
    assert verdict_counts(f) == {"supported": 1, "contradicted": 1, "inconclusive at this scale": 1}
    assert claims_summary(tmp_path / "missing.csv") == ""


def test_claims_summary_of_a_table_judged_with_the_old_rules_says_so(tmp_path):
    from kexue.claims import claims_summary
    f = tmp_path / "claims.csv"
    pd.DataFrame({"claim": list("abc"), "evidence": list("xyz"),
                  "verdict": ["supported", "not supported", "supported"]}).to_csv(f, index=False)
    text = claims_summary(f)
    assert text.startswith("3 rows judged before the claims registry, with the old rules")
    assert text.endswith("2 supported; 1 not supported")          # every row counted, none silently dropped
