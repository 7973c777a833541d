"""kexue.book: the pieces that prepare the executed notebooks for the book, and one small real build.

The built site itself is opened in headless Chromium by tests/test_browser.py.
"""
from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from kexue import book
from kexue.chapters import CHAPTERS
from kexue.config import ROOT


def png(width: int, height: int) -> bytes:
    """A valid white RGB PNG of the given size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + b"\xff" * (3 * width) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# ---------------------------------------------------------------------------------------------
# Cells


@pytest.mark.parametrize("source, role", [
    ("fig, ax = plt.subplots()\nax.plot(x)\nreport.figure(fig, 'a', 'caption')", "plot"),
    ("import numpy as np\nfrom kexue import gan\nimport torch\nseed_everything(seed)", "setup"),
    ("report.finding(f'{x}')\nreport.summary('s')", "bookkeeping"),
    ("report.verify(claims, live.summary, path)\nlive.end()", "bookkeeping"),
    ("result = train(model, steps)\nreport.show(table, 'name', 'caption')", None),
    ("a = train()\nb = evaluate(a)\nc = compare(a, b)\nreport.finding(f'{c}')", None),   # an experiment
    ("live = Live('x', dvcyaml=False)\nlive.log_metric('a', 1)\nx = 1", "bookkeeping"),
    ("%matplotlib inline\nx = 1", None),
    ("import a\nimport b\nimport c\nimport d\nfrom e import f\n" + "x = load()\n" * 10, "setup"),
    ("x = load()\nimport a\nimport b\nimport c\nimport d\nfrom e import f\n" + "x = load()\n" * 10, None),
    ("# only a comment\n", None),
    ("", None),
    ("v = verdicts.superiority(a, b, paired=True)\nclaims = report.claims({'x': v})", "verdicts"),
])
def test_cell_role(source, role):
    assert book.cell_role(source) == role


def test_params_table_shows_values_that_ran_defaults_and_notes():
    defaults = 'seed = 0\nlr = 0.0015   # AdaX (article default)\nscale = "default"\neps = 2e-3\n'
    injected = '# Parameters\nseed = 0\nlr = 0.003\nscale = "smoke"\nextra = 5\neps = 0.002\n'
    out = book.params_table(defaults, injected)
    assert out.startswith("<details") and "\n\n" not in out
    rows = re.findall(r"<tr><td><code>(\w+)</code></td><td><code>([^<]*)</code></td><td>(.*?)</td><td>(.*?)</td></tr>", out)
    assert [r[0] for r in rows] == ["seed", "lr", "scale", "extra", "eps"]
    by = {r[0]: r for r in rows}
    assert by["lr"][1] == "0.003" and by["lr"][2] == "<code>0.0015</code>" and by["lr"][3] == "AdaX (article default)"
    assert by["seed"][2] == "" and by["eps"][2] == ""             # default equals the value that ran
    assert by["scale"][1] == "&quot;smoke&quot;"
    assert "the 5 values" in out


# ---------------------------------------------------------------------------------------------
# Cross-references and citations


TARGETS = {"s": {"0", "2", "3", "4", "6"}, "fig": {"3"}, "table": {"2"}, "eq": {"4"}}


def test_section_references_become_links_where_the_section_exists():
    out = book.link_crossrefs("See §6 and §2–4, not §9.", "04_adax", TARGETS, bib=False)
    assert '<a class="kexue-xref" href="#ch04-s-6">§6</a>' in out
    assert '<a class="kexue-xref" href="#ch04-s-2">§2</a>–<a class="kexue-xref" href="#ch04-s-4">4</a>' in out
    assert "not §9." in out                                       # no such section: plain text


def test_figure_table_and_equation_references():
    out = book.link_crossrefs("Fig. 3 shows it; Figure 3 too; Table 2 and eq. (4); Fig. 7 is absent.",
                              "02_energy_based_model", TARGETS, bib=False)
    assert out.count('href="#ch02-fig-3"') == 2
    assert '<a class="kexue-xref" href="#ch02-table-2">Table 2</a>' in out
    assert '<a class="kexue-xref" href="#equation-ch02-eq-4">eq. (4)</a>' in out
    assert "Fig. 7 is absent" in out


def test_references_inside_code_math_links_and_captions_are_left_alone():
    text = ("`§6` and $x_{§6}$ and [§6](#here) and <span title='§6'>t</span> and "
            "$$\\text{Fig. 3}$$ and **Figure 3** (`figures/a.png`).")
    assert book.link_crossrefs(text, "04_adax", TARGETS, bib=False) == text


def test_citations_link_to_the_bibliography():
    out = book.link_citations("Seed article (kexue.fm/archives/7387), arXiv:2004.09740, "
                              "as Srivastava et al., 2017 did; see NVlabs/edm.")
    for key in ("su2020adax", "li2020", "srivastava2017", "nvlabs-edm"):
        assert f'href="bibliography.html#ref-{key}"' in out
    assert book.link_citations("kexue.fm/archives/73870") == "kexue.fm/archives/73870"


def test_bibliography_has_every_article_and_reference_repository():
    page = book.bibliography_page()
    ids = re.findall(r'id="ref-([^"]+)"', page)
    assert len(ids) == len(set(ids)) == len(book.BIBLIOGRAPHY)
    for chapter in CHAPTERS:
        assert book.seed_url(chapter) in page
    for repo in ("NVlabs/edm", "openai/ebm_code_release", "bojone/bert4keras", "ZhuiyiTechnology/simbert",
                 "sentence-transformers"):
        assert f"github.com/{repo}" in page or repo in page
    for chapter in CHAPTERS:                                      # every chapter has a paper or its code
        assert any(e["group"] != "article" and chapter in e["chapters"] for e in book.BIBLIOGRAPHY)


def test_label_sections_and_equations():
    md = "## 6. Fashion-MNIST\ntext\n### 6.1 sub\n## Summary\n"
    out, found = book.label_sections(md, "04_adax")
    assert found == {"6"} and out.startswith("(ch04-s-6)=\n## 6. Fashion-MNIST")
    md = "Text\n\n$$a = b$$\n\nmore $x$ and\n$$\nc = d\n$$\nand inline $$e$$ here."
    out, given = book.label_equations(md, "04_adax", start=3)
    assert given == ["3", "4"]
    assert "$$a = b$$ (ch04-eq-3)" in out and "c = d\n$$ (ch04-eq-4)" in out
    assert "inline $$e$$ here." in out


# ---------------------------------------------------------------------------------------------
# Figures and claims


def test_plain_text_alt():
    assert book.plain_text("**Figure 1** (`figures/a.png`). The coefficient $\\hat\\beta_{2,t}$ for "
                           "$t \\le 30$, [link](x.html).") == \
        "Figure 1 (figures/a.png). The coefficient β2,t for t ≤ 30, link."


def test_png_size_and_figure_html(tmp_path):
    f = tmp_path / "a.png"
    f.write_bytes(png(50, 20))
    assert book.png_size(f) == (50, 20)
    out = book.figure_html("../x/figures/a.png", 'Figure 1 "quoted"', 1000, 400, "ch01-fig-1")
    assert 'id="ch01-fig-1"' in out and 'alt="Figure 1 &quot;quoted&quot;"' in out
    assert "max-width:1000px" in out and "min-width:600px" in out
    (tmp_path / "b.png").write_bytes(b"GIF89a" + b"\0" * 30)
    with pytest.raises(ValueError):
        book.png_size(tmp_path / "b.png")


def test_make_thumbnail_is_made_at_the_size_shown(tmp_path):
    src, out = tmp_path / "big.png", tmp_path / "thumbs" / "t.png"
    src.write_bytes(png(800, 200))
    assert book.make_thumbnail(src, out, width=320) == (320, 80)
    assert book.png_size(out) == (320, 80) == book._thumb_size(src, 320)
    small = tmp_path / "small.png"
    small.write_bytes(png(100, 50))
    assert book.make_thumbnail(small, tmp_path / "s.png", width=320) == (100, 50)   # never enlarged


def test_prune_removes_what_no_page_loads(tmp_path):
    for rel in (".buildinfo", "objects.inv", "_sources/a.txt", "_static/locales/de/x.mo",
                "_static/scripts/a.js", "_static/scripts/a.js.map", "index.html"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    book.prune(tmp_path)
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["_static/scripts/a.js", "index.html"]


def test_sphinx_config_uses_local_mathjax_only():
    conf = book.sphinx_config()
    assert "://" not in conf["mathjax_path"] and conf["mathjax_path"].endswith("assets/mathjax/MathJax.js")
    assert conf["nb_execution_mode"] == "off" and conf["nb_output_stderr"] == "remove"
    assert "TeX-AMS-MML_HTMLorMML-full.js" in book.MATHJAX_CONFIG and "http" not in book.MATHJAX_CONFIG


# ---------------------------------------------------------------------------------------------
# A whole chapter notebook, prepared; and a small real build


def demo_reports(root: Path, chapter: str = "04_adax") -> Path:
    """A reports/ folder with one executed chapter notebook, its figure, claims table and status."""
    d = root / chapter
    (d / "figures").mkdir(parents=True)
    (d / "tables").mkdir()
    (d / "figures" / "curve.png").write_bytes(png(900, 300))
    pd.DataFrame({"id": ["a", "b", "c"], "claim": ["a", "b", "c"], "source": ["article", "article", "identity"],
                  "evidence": ["x", "y", "z"], "verdict": ["supported", "contradicted", "supported"],
                  "reason": ["significant", "other_way", "within_tolerance"]}).to_csv(d / "tables" / "claims.csv",
                                                                                     index=False)
    (d / "summary.md").write_text("1 of 2 claims supported; $x_1$ is **small**.")
    (d / "captions.json").write_text(json.dumps({"curve": "A curve of $\\beta_2$."}))
    (d / "status.json").write_text(json.dumps({"chapter": chapter, "scale": "smoke", "device": "cpu",
                                               "stage_seconds": 90.0, "finished_utc": "2026-01-01 00:00",
                                               "git_revision": "abc1234"}))
    nb = nbformat.v4.new_notebook()
    fig_out = [
        nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}),
        nbformat.v4.new_output("display_data", data={
            "text/markdown": "**Figure 1** (`figures/curve.png`). A curve of $\\beta_2$.", "text/plain": "x"}),
        nbformat.v4.new_output("stream", name="stderr", text="LinAlgWarning: Matrix is singular\n"),
    ]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Chapter 04 — Demo\n\nSeed article (kexue.fm/archives/7387). See §1 and Fig. 1."),
        nbformat.v4.new_code_cell("seed = 0\nlr = 0.1  # the step size", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("# Parameters\nseed = 0\nlr = 0.2\n", metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("import numpy as np\nimport torch",
                                  outputs=[nbformat.v4.new_output("stream", name="stdout", text="scale=smoke\n")]),
        nbformat.v4.new_markdown_cell("## 1. The update\n\n$$\nm_t = \\beta_1 m_{t-1}\n$$\n\nAs eq. (1) says."),
        nbformat.v4.new_code_cell("fig, ax = plt.subplots()\nreport.figure(fig, 'curve', 'A curve')", outputs=fig_out),
        nbformat.v4.new_markdown_cell("## 2. Verdicts"),
        nbformat.v4.new_code_cell("claims = report.claims(rows)"),
    ]
    nbformat.write(nb, d / f"{chapter}.ipynb")
    return root


def test_prepare_notebook(tmp_path):
    reports = demo_reports(tmp_path / "reports")
    nb = nbformat.read(reports / "04_adax" / "04_adax.ipynb", as_version=4)
    out = book.prepare_notebook(nb, "04_adax", reports)
    assert nb.cells[1].metadata["tags"] == ["parameters"]                  # the input is not changed
    sources = [c.source for c in out.cells]
    assert not any("parameters" in c.metadata.get("tags", []) for c in out.cells)
    assert sum("<details class=\"kexue-params\">" in s for s in sources) == 1
    glance = next(s for s in sources if "Verdicts at a glance" in s)
    assert "2 claims: 1 supported; 1 contradicted (other_way) — and 1 identity: 1 supported" in glance and 'href="#ch04-s-2"' in glance
    assert sources.index(glance) == 1                                       # right under the title
    title = out.cells[0].source
    assert 'href="#ch04-s-1"' in title and 'href="#ch04-fig-1"' in title
    assert 'href="bibliography.html#ref-su2020adax"' in title
    update = next(s for s in sources if "## 1. The update" in s)
    assert update.startswith("(ch04-s-1)=") and "$$ (ch04-eq-1)" in update and 'href="#equation-ch04-eq-1"' in update
    code = {c.source.split("\n")[0]: c for c in out.cells if c.cell_type == "code"}
    assert "hide-input" in code["import numpy as np"].metadata["tags"]
    assert "hide-input" in code["fig, ax = plt.subplots()"].metadata["tags"]
    assert "hide-input" in code["claims = report.claims(rows)"].metadata.get("tags", [])     # the table is what is read
    fig_outputs = code["fig, ax = plt.subplots()"].outputs
    assert len(fig_outputs) == 2                                            # stderr dropped
    img = fig_outputs[0]["data"]["text/html"]
    assert 'src="../04_adax/figures/curve.png"' in img and 'id="ch04-fig-1"' in img
    assert 'alt="Figure 1. A curve of β2."' in img and "min-width:540px" in img
    assert list(fig_outputs[0]["data"]) == ["text/html"]                    # no second copy of the PNG


def test_landing_page_rows(tmp_path):
    reports = demo_reports(tmp_path / "reports")
    thumbs = {"04_adax": ("_thumbs/04_adax.png", 320, 107)}
    page = book.landing_page(reports, thumbs, ["04_adax"])
    assert "## How to read a verdict" in page and "## Execution status" in page
    assert '<img class="kexue-thumb" src="_thumbs/04_adax.png" width="320" height="107"' in page
    assert 'alt="Chapter 04, headline figure: A curve of β2."' in page
    assert "2 claims: 1 supported; 1 contradicted (other_way) — and 1 identity: 1 supported" in page
    assert "<strong>small</strong>" in page and "$x_1$" in page             # summary: Markdown, math kept
    assert "<td>abc1234</td>" in page and "<td>1.5</td>" in page            # status: revision, minutes
    assert "(not run yet)" in page                                          # the other chapters
    for block in re.findall(r"^<table.*$", page, re.M):
        assert "\n\n" not in block


def test_build_a_small_book(tmp_path):
    reports = demo_reports(tmp_path / "reports")
    out = book.build(reports, reports / "book", src=tmp_path / "build" / "src")
    pages = sorted(p.name for p in out.glob("*.html"))
    assert pages == ["04_adax.html", "bibliography.html", "index.html", "search.html"]
    page = (out / "04_adax.html").read_text()
    assert 'src="_static/../../assets/mathjax/MathJax.js' in page                 # reports/assets, no CDN
    assert not re.search(r"<script[^>]+src=\"(https?:)?//", page)
    assert 'href="#ch04-s-1"' in page and 'id="ch04-s-1"' in page
    assert 'id="equation-ch04-eq-1"' in page and 'href="#equation-ch04-eq-1"' in page
    assert "Show code cell source" in page and "LinAlgWarning" not in page
    assert 'src="../04_adax/figures/curve.png"' in page
    assert (out / "_thumbs" / "04_adax.png").is_file() and (out / "searchindex.js").is_file()
    assert not (out / "_sources").exists() and not list(out.rglob("*.map"))
    assert not (reports / "jupyter_execute").exists()
    index = (out / "index.html").read_text()
    assert 'href="04_adax.html"' in index and "bibliography.html" in index


# ---------------------------------------------------------------------------------------------
# The committed book


def test_committed_book_has_every_chapter():
    site = ROOT / "reports" / "book"
    ran = [c for c in CHAPTERS if (ROOT / "reports" / c / f"{c}.ipynb").exists()]
    if not ran:
        pytest.skip("no chapter has run")
    assert (site / "index.html").is_file(), "reports/book is missing: python -m kexue.book"
    for chapter in ran:
        assert (site / f"{chapter}.html").is_file(), f"reports/book/{chapter}.html missing: python -m kexue.book"
    index = (site / "index.html").read_text(encoding="utf-8")
    for chapter in ran:
        assert f'href="{chapter}.html"' in index


def test_committed_book_is_up_to_date(tmp_path):
    """The committed pages are what `python -m kexue.book` makes from the committed reports now (the
    build is deterministic), so a chapter rerun without the book stage shows up here."""
    site = ROOT / "reports" / "book"
    if not (site / "index.html").exists():
        pytest.skip("no committed book")
    fresh = book.build(ROOT / "reports", tmp_path / "book", src=tmp_path / "src")
    pages = sorted(p.relative_to(fresh).as_posix() for p in fresh.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file())
    assert pages == committed, "reports/book has other files than a fresh build: python -m kexue.book"
    stale = [p for p in pages if p.endswith((".html", ".js", ".css"))
             and (fresh / p).read_bytes() != (site / p).read_bytes()]
    assert not stale, f"reports/book is stale ({', '.join(stale[:5])}): python -m kexue.book"
