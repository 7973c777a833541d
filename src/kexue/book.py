"""The workbook as a book: `reports/book/`, built offline from the executed notebooks (`python -m kexue.book`).

Sphinx with myst-nb and sphinx-book-theme (the Jupyter Book 1 stack; DESIGN.md says why) reads a
*copy* of each executed notebook `reports/NN_slug/NN_slug.ipynb`, prepared for readers here; no cell
is executed again. The site gets, from the theme, a sidebar listing every chapter (built once from
all of them, so it never goes stale), an in-page table of contents, previous/next links and an
offline full-text search (`search.html` loads `searchindex.js` as a script, so it works over
`file://`); math is typeset by the MathJax 2 copy in `reports/assets/` (no CDN).

What the copy changes (the text notebooks and the committed chapter reports stay as they are):

* cells: plotting, setup (imports) and bookkeeping cells (`cell_role`) get myst-nb's own
  `hide-input` tag (their code collapsed under a toggle, their output shown); stderr outputs are
  dropped; the `parameters` and `injected-parameters` cells become one table of the values that ran
  (`params_table`);
* figures: each inline PNG that `Report.figure` showed becomes an `<img>` of the committed
  `reports/NN_slug/figures/NAME.png` (not a second copy), with an id (`chNN-fig-K`) and alt text made
  from its caption, shown at no less than 60% of its natural width (wider figures scroll);
* cross-references: "§6", "§2–4", "Fig. 3"/"Figure 3", "Table 2", "eq. (4)" in the prose become links
  where the target exists in the chapter (`link_crossrefs`); citations of the seed articles, arXiv ids,
  "Surname et al., YEAR" and the reference repositories link to the bibliography page;
* a "verdicts at a glance" line under the title (counts of `tables/claims.csv`, `kexue.claims.claims_summary`).

The landing page (`index.html`: what the workbook is, how to read a verdict, one row per chapter
with its finding, verdict counts and one headline figure as a thumbnail, the execution status) and
the bibliography page are generated here from the reports. `tests/test_book.py` tests the pieces;
`tests/test_browser.py` opens every page of the built site in headless Chromium.
"""
from __future__ import annotations

import argparse
import ast
import copy
import html
import io
import json
import math
import re
import shutil
import struct
import sys
import time
from pathlib import Path

from .chapters import BOOK, CHAPTERS, seed_url
from .claims import claims_summary
from .index import calibration_html
from .config import ROOT

REPORTS = ROOT / "reports"
OUT = REPORTS / "book"
SOURCE = ROOT / "build" / "book-src"          # generated Sphinx sources (not committed)
MATHJAX = "../../assets/mathjax/MathJax.js"   # reports/assets/mathjax (the index stage installs it); Sphinx
                                              # puts "_static/" before it, so from reports/book/ it is ../assets
THUMB_WIDTH = 320                             # px: landing-page thumbnails are made at the size shown
MIN_SHOWN = 0.6                               # a figure is never shown below this share of its width
# Which claims are "the article's": the `source` column of the new claims tables (when present).
# The headline figure of each chapter on the landing page (the first figure when absent or missing).
HEADLINE = {
    "01_single_loss_gan": "fashion_samples",
    "02_energy_based_model": "fashion_samples",
    "03_skip_tuning": "fd_vs_nfe_rho",
    "04_adax": "long_run_sweep",
    "05_simbert": "retrieval_mrr",
}

# ---------------------------------------------------------------------------------------------
# Bibliography: the seed articles, the papers each chapter tests or leans on, the reference code.
# `cite` lists the plain-text forms under which the chapters mention an entry (linked at build time).

BIBLIOGRAPHY = [
    # seed articles (Su Jianlin, Scientific Spaces), one per chapter
    dict(key="su2019single", group="article", chapters=["01_single_loss_gan"], cite=["kexue.fm/archives/6387"],
         text="Su Jianlin (2019). *Clever gradient cutting: a GAN with a single loss* (巧断梯度：单个loss实现GAN模型). "
              "Scientific Spaces.", url="https://kexue.fm/archives/6387"),
    dict(key="su2019energy", group="article", chapters=["02_energy_based_model"], cite=["kexue.fm/archives/6612"],
         text="Su Jianlin (2019). *GANs from the energy viewpoint (3): generative model = energy model*. "
              "Scientific Spaces.", url="https://kexue.fm/archives/6612"),
    dict(key="su2024skip", group="article", chapters=["03_skip_tuning"], cite=["kexue.fm/archives/10077"],
         text="Su Jianlin (2024). *Skip-Tuning of diffusion models*. Scientific Spaces.",
         url="https://kexue.fm/archives/10077"),
    dict(key="su2020adax", group="article", chapters=["04_adax"], cite=["kexue.fm/archives/7387"],
         text="Su Jianlin (2020). *A brief analysis of the AdaX optimizer*. Scientific Spaces.",
         url="https://kexue.fm/archives/7387"),
    dict(key="su2020simbert", group="article", chapters=["05_simbert"], cite=["kexue.fm/archives/7427"],
         text="Su Jianlin (2020). *SimBERT: fusing retrieval and generation*. Scientific Spaces.",
         url="https://kexue.fm/archives/7427"),
    # papers
    dict(key="mescheder2018", group="paper", chapters=["01_single_loss_gan"], cite=["Mescheder et al., 2018"],
         text="Mescheder, L., Geiger, A., Nowozin, S. (2018). *Which Training Methods for GANs do actually "
              "Converge?* ICML 2018. arXiv:1801.04406 (the Dirac-GAN).", url="https://arxiv.org/abs/1801.04406"),
    dict(key="srivastava2017", group="paper", chapters=["01_single_loss_gan"], cite=["Srivastava et al., 2017"],
         text="Srivastava, A. et al. (2017). *VEEGAN: Reducing Mode Collapse in GANs using Implicit Variational "
              "Learning*. NeurIPS 2017. arXiv:1705.07761.", url="https://arxiv.org/abs/1705.07761"),
    dict(key="lin2018", group="paper", chapters=["01_single_loss_gan"], cite=["Lin et al., 2018"],
         text="Lin, Z. et al. (2018). *PacGAN: The power of two samples in generative adversarial networks*. "
              "NeurIPS 2018. arXiv:1712.04086.", url="https://arxiv.org/abs/1712.04086"),
    dict(key="du2019", group="paper", chapters=["02_energy_based_model"], cite=["arXiv:1903.08689"],
         text="Du, Y., Mordatch, I. (2019). *Implicit Generation and Generalization in Energy-Based Models* "
              "(IGEBM). NeurIPS 2019. arXiv:1903.08689.", url="https://arxiv.org/abs/1903.08689"),
    dict(key="nijkamp2019", group="paper", chapters=["02_energy_based_model"], cite=["Nijkamp et al., 2019"],
         text="Nijkamp, E. et al. (2019). *Learning Non-Convergent Non-Persistent Short-Run MCMC Toward "
              "Energy-Based Model*. NeurIPS 2019. arXiv:1904.09770.", url="https://arxiv.org/abs/1904.09770"),
    dict(key="ma2024", group="paper", chapters=["03_skip_tuning"], cite=["arXiv:2402.15170"],
         text="Ma, J., Zhang, S., Xue, S., Huang, C. (2024). *The Surprising Effectiveness of Skip-Tuning in "
              "Diffusion Sampling*. ICML 2024. arXiv:2402.15170.", url="https://arxiv.org/abs/2402.15170"),
    dict(key="karras2022", group="paper", chapters=["03_skip_tuning"], cite=["Karras et al., 2022"],
         text="Karras, T., Aittala, M., Aila, T., Laine, S. (2022). *Elucidating the Design Space of "
              "Diffusion-Based Generative Models* (EDM). NeurIPS 2022. arXiv:2206.00364.",
         url="https://arxiv.org/abs/2206.00364"),
    dict(key="si2023", group="paper", chapters=["03_skip_tuning"], cite=["Si et al., 2023"],
         text="Si, C. et al. (2023). *FreeU: Free Lunch in Diffusion U-Net*. CVPR 2024. arXiv:2309.11497.",
         url="https://arxiv.org/abs/2309.11497"),
    dict(key="li2020", group="paper", chapters=["04_adax"], cite=["arXiv:2004.09740"],
         text="Li, W. et al. (2020). *AdaX: Adaptive Gradient Descent with Exponential Long Term Memory*. "
              "arXiv:2004.09740.", url="https://arxiv.org/abs/2004.09740"),
    dict(key="shazeer2018", group="paper", chapters=["04_adax"], cite=["Shazeer & Stern, 2018"],
         text="Shazeer, N., Stern, M. (2018). *Adafactor: Adaptive Learning Rates with Sublinear Memory Cost*. "
              "ICML 2018. arXiv:1804.04235.", url="https://arxiv.org/abs/1804.04235"),
    dict(key="dong2019", group="paper", chapters=["05_simbert"], cite=["Dong et al., 2019", "arXiv:1905.03197"],
         text="Dong, L. et al. (2019). *Unified Language Model Pre-training for Natural Language Understanding "
              "and Generation* (UniLM). NeurIPS 2019. arXiv:1905.03197.", url="https://arxiv.org/abs/1905.03197"),
    # reference code
    dict(key="nvlabs-edm", group="code", chapters=["03_skip_tuning"], cite=["NVlabs/edm"],
         text="NVlabs/edm: the reference implementation of EDM (Karras et al., 2022).",
         url="https://github.com/NVlabs/edm"),
    dict(key="openai-ebm", group="code", chapters=["02_energy_based_model"], cite=["openai/ebm_code_release"],
         text="openai/ebm_code_release: IGEBM's released code (Du & Mordatch, 2019).",
         url="https://github.com/openai/ebm_code_release"),
    dict(key="bert4keras", group="code", chapters=["05_simbert"], cite=["bojone/bert4keras", "bert4keras"],
         text="bojone/bert4keras: Su Jianlin's Keras BERT library, in which SimBERT was written.",
         url="https://github.com/bojone/bert4keras"),
    dict(key="simbert-code", group="code", chapters=["05_simbert"], cite=["ZhuiyiTechnology/simbert"],
         text="ZhuiyiTechnology/simbert: the released SimBERT model and training script.",
         url="https://github.com/ZhuiyiTechnology/simbert"),
    dict(key="sentence-transformers", group="code", chapters=["05_simbert"], cite=["sentence-transformers"],
         text="sentence-transformers (UKPLab): sentence embeddings; its all-MiniLM-L6-v2 is chapter 05's "
              "pretrained BERT.", url="https://github.com/UKPLab/sentence-transformers"),
]
BIB_GROUPS = {"article": "The seed articles (kexue.fm)", "paper": "Papers the chapters test or lean on",
              "code": "Reference code"}


# ---------------------------------------------------------------------------------------------
# Cells


PLOT = re.compile(r"\breport\.figure\(|\bplt\.(subplots|figure)\(|\.savefig\(")
VERDICTS = re.compile(r"\breport\.claims\(")        # the cell that assembles the claims table
IMPORT = re.compile(r"^\s*(import\s+\w|from\s+[\w.]+\s+import\b)")
# Bookkeeping: calls that record what was measured rather than measure it.
BOOKKEEPING = {"report": {"verify", "summary", "finding", "note"}, "live": {"end", "log_metric", "next_step"}}


def _is_bookkeeping(stmt) -> bool:
    """A top-level statement `report.finding(...)`, `live.end()`, `live = Live(...)`, ..."""
    value = stmt.value if isinstance(stmt, (ast.Expr, ast.Assign)) else None
    if not isinstance(value, ast.Call):
        return False
    f = value.func
    if isinstance(f, ast.Name):
        return f.id == "Live"
    return (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
            and f.attr in BOOKKEEPING.get(f.value.id, ()))


def cell_role(source: str) -> str | None:
    """What a code cell is for a reader: 'plot' (it draws a figure), 'setup' (mostly imports, or
    opening with at least five),
    'bookkeeping' (at least two thirds of its statements record results: findings, summary, verify,
    DVCLive), 'verdicts' (it builds the claims table with `report.claims(`) or None (the cell is part of the argument and stays open)."""
    lines = [ln for ln in source.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return None
    if PLOT.search(source):
        return "plot"
    if VERDICTS.search(source):
        return "verdicts"                    # rule calls behind the claims table: the table is what a reader reads
    imports = sum(bool(IMPORT.match(ln)) for ln in lines)
    if imports and (imports >= len(lines) / 2 or (IMPORT.match(lines[0]) and imports >= 5)):
        return "setup"                       # mostly imports, or a block of imports and the set-up after it
    try:
        body = ast.parse(source).body
    except SyntaxError:                      # IPython magics and the like: leave the cell open
        return None
    if body and sum(map(_is_bookkeeping, body)) >= 2 * len(body) / 3:
        return "bookkeeping"
    return None


def _parse_assignments(source: str) -> dict[str, str]:
    """`name = value` lines of a parameters cell: name -> the value's source text."""
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = ast.get_source_segment(source, node.value)
    return out


def _comments(source: str) -> dict[str, str]:
    """The trailing `# comment` of each `name = value` line."""
    out = {}
    for ln in source.splitlines():
        m = re.match(r"\s*(\w+)\s*=.*?#\s*(.+)$", ln)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _same_value(a: str, b: str) -> bool:
    """Whether two Python literals are equal as values ("2e-3" and "0.002" are)."""
    try:
        return ast.literal_eval(a) == ast.literal_eval(b)
    except (ValueError, SyntaxError):
        return a == b


def params_table(defaults: str, injected: str) -> str:
    """The parameters as one HTML table (a collapsed block): every value that ran (papermill's
    injected cell), the notebook's default where it differs, and the default cell's comment."""
    ran = _parse_assignments(injected) if injected else {}
    default = _parse_assignments(defaults) if defaults else {}
    notes = _comments(defaults) if defaults else {}
    names = list(ran) + [n for n in default if n not in ran]
    rows = []
    for name in names:
        value = ran.get(name, default.get(name))
        d = default.get(name)
        if d is not None and _same_value(d, value):
            d = value
        rows.append(f"<tr><td><code>{html.escape(name)}</code></td><td><code>{html.escape(str(value))}</code></td>"
                    f"<td>{'' if d is None or d == value else '<code>' + html.escape(d) + '</code>'}</td>"
                    f"<td>{html.escape(notes.get(name, ''))}</td></tr>")
    return ('<details class="kexue-params"><summary>Parameters: the ' + str(len(rows)) + ' values this chapter '
            'ran with (<code>params.yaml</code>, scale preset applied)</summary>'
            '<table class="kexue-table"><thead><tr><th>parameter</th><th>value that ran</th>'
            '<th>notebook default</th><th>note</th></tr></thead><tbody>' + "".join(rows)
            + "</tbody></table></details>")


# ---------------------------------------------------------------------------------------------
# Cross-references


# Code and math are left alone: fenced blocks, inline code, $$...$$, $...$, \(...\), \[...\], and
# links or HTML tags already there.
PROTECTED = re.compile(r"```.*?```|`[^`\n]*`|\$\$.*?\$\$|\$[^$\n]*\$|\\\(.*?\\\)|\\\[.*?\\\]"
                       r"|\[[^\]\n]*\]\([^)\n]*\)|<[^>\n]+>|\{[a-z]+\}`[^`]*`", re.S)
SECTION_REF = re.compile(r"§\s?(\d+)(?:\s?([–-])\s?(\d+))?")
FIGURE_REF = re.compile(r"(?<!\*\*)\b(Figs?\.|Figures?)\s?(\d+)\b(?!\*\*)")
TABLE_REF = re.compile(r"(?<!\*\*)\b(Tables?)\s(\d+)\b(?!\*\*)")
EQUATION_REF = re.compile(r"\b([Ee]q\.|[Ee]quation)\s?\((\d+)\)")
HEADING = re.compile(r"^(#{2,4})\s+(\d+)\.\s", re.M)


def outside_protected(text: str, fn) -> str:
    """Apply `fn` to the parts of `text` that are prose (not code, math, links or tags)."""
    out, last = [], 0
    for m in PROTECTED.finditer(text):
        out.append(fn(text[last:m.start()]))
        out.append(m.group(0))
        last = m.end()
    out.append(fn(text[last:]))
    return "".join(out)


def anchor(chapter: str, kind: str, number) -> str:
    """The id of a section ('s'), figure ('fig'), table ('table') or equation ('eq') of a chapter."""
    return f"ch{chapter[:2]}-{kind}-{number}"


def link_crossrefs(text: str, chapter: str, targets: dict[str, set], *, bib: bool = True) -> str:
    """"§6", "§2–4", "Fig. 3", "Table 2", "eq. (4)" as links to the chapter's own section, figure, table
    or equation where `targets` (kind -> numbers present) has it; others stay plain text. With `bib`,
    citations of bibliography entries link to the bibliography page."""
    def section(m):
        first, dash, last = m.group(1), m.group(2), m.group(3)
        if first not in targets.get("s", set()):
            return m.group(0)
        out = f"<a class=\"kexue-xref\" href=\"#{anchor(chapter, 's', first)}\">§{first}</a>"
        if dash:
            tail = (f"<a class=\"kexue-xref\" href=\"#{anchor(chapter, 's', last)}\">{last}</a>"
                    if last in targets.get("s", set()) else last)
            out += dash + tail
        return out

    def numbered(kind):
        def sub(m):
            word, n = m.group(1), m.group(2)
            if n not in targets.get(kind, set()):
                return m.group(0)
            ident = f"equation-{anchor(chapter, kind, n)}" if kind == "eq" else anchor(chapter, kind, n)
            return f"<a class=\"kexue-xref\" href=\"#{ident}\">{m.group(0)}</a>"
        return sub

    def prose(part: str) -> str:
        part = SECTION_REF.sub(section, part)
        part = FIGURE_REF.sub(numbered("fig"), part)
        part = TABLE_REF.sub(numbered("table"), part)
        part = EQUATION_REF.sub(numbered("eq"), part)
        if bib:
            part = link_citations(part)
        return part

    return outside_protected(text, prose)


def _cite_pattern():
    forms = sorted({c for entry in BIBLIOGRAPHY for c in entry["cite"]}, key=len, reverse=True)
    return re.compile("|".join(rf"(?<![\w/]){re.escape(c)}(?![\w/])" for c in forms))


CITE_FORMS = {c: e["key"] for e in BIBLIOGRAPHY for c in e["cite"]}
CITE = _cite_pattern()


def link_citations(text: str) -> str:
    """Plain-text mentions of a bibliography entry ("kexue.fm/archives/7387", "arXiv:2004.09740",
    "Srivastava et al., 2017", "NVlabs/edm") as links to its entry on the bibliography page."""
    return CITE.sub(lambda m: f"<a class=\"kexue-cite\" href=\"bibliography.html#ref-{CITE_FORMS[m.group(0)]}\">"
                              f"{m.group(0)}</a>", text)


DISPLAY_MATH = re.compile(r"^([ \t]*\$\$)(.+?)\$\$[ \t]*$", re.M | re.S)


def label_equations(markdown: str, chapter: str, start: int = 1) -> tuple[str, list[str]]:
    """Number the display equations of a Markdown cell: each `$$...$$` block that starts and ends a
    line gets a MyST label `(chNN-eq-K)`, K counting on from `start` through the chapter; Sphinx
    numbers labelled equations in document order, so its "(K)" is the K here. Returns the new Markdown
    and the numbers given."""
    given = []

    def sub(m):
        if "$$" in m.group(2):                       # two blocks on one line: leave them alone
            return m.group(0)
        k = start + len(given)
        given.append(str(k))
        return f"{m.group(1)}{m.group(2)}$$ ({anchor(chapter, 'eq', k)})"
    return DISPLAY_MATH.sub(sub, markdown), given


def label_sections(markdown: str, chapter: str) -> tuple[str, set[str]]:
    """Put a MyST target `(chNN-s-K)=` before each numbered heading `## K. ...`; return the new
    Markdown and the section numbers found."""
    found = set()

    def sub(m):
        found.add(m.group(2))
        return f"({anchor(chapter, 's', m.group(2))})=\n{m.group(0)}"
    return HEADING.sub(sub, markdown), found


# ---------------------------------------------------------------------------------------------
# Figures


CAPTION = re.compile(r"^\*\*(Figure|Table)\s+(\d+)\*\*(?:\s*\(`(?:figures|tables)/([^`]+)`\))?\.?\s*(.*)", re.S)
GREEK = {"alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "varepsilon": "ε", "eta": "η",
         "theta": "θ", "lambda": "λ", "mu": "μ", "rho": "ρ", "sigma": "σ", "tau": "τ", "phi": "φ", "pi": "π",
         "nabla": "∇", "le": "≤", "ge": "≥", "times": "×", "approx": "≈", "infty": "∞", "to": "→", "pm": "±",
         "cdot": "·", "ell": "ℓ", "Delta": "Δ", "Sigma": "Σ", "partial": "∂"}


def plain_text(markdown: str) -> str:
    """Markdown (with TeX) as plain text for alt attributes: no emphasis, code marks or TeX commands."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", markdown)
    text = re.sub(r"\\(mathrm|text|textrm|operatorname|mathbb|mathcal|hat|tilde|bar)\b", "", text)
    text = re.sub(r"\\([A-Za-z]+)", lambda m: GREEK.get(m.group(1), m.group(1)), text)
    text = re.sub(r"[*`$_{}\\]|\^", "", text)
    return re.sub(r"\s+", " ", text).strip()


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG file, from its header."""
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    return struct.unpack(">II", head[16:24])


def figure_html(src: str, alt: str, width: int, height: int, fig_id: str | None) -> str:
    """An <img> of a committed figure: as wide as the column allows, never below MIN_SHOWN of its
    natural width (a wider figure scrolls sideways) and never above it."""
    ident = f' id="{html.escape(fig_id)}"' if fig_id else ""
    min_w = math.ceil(MIN_SHOWN * width)
    return (f'<div class="kexue-figure"{ident}><img src="{html.escape(src)}" alt="{html.escape(alt, quote=True)}" '
            f'width="{width}" height="{height}" '
            f'style="width:100%;max-width:{width}px;min-width:{min_w}px;height:auto"></div>')


# ---------------------------------------------------------------------------------------------
# Claims


# ---------------------------------------------------------------------------------------------
# One chapter's notebook, prepared for readers


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else (value or "")


def prepare_notebook(nb, chapter: str, reports: Path = REPORTS):
    """A copy of the executed notebook `nb` ready for myst-nb (see the module docstring)."""
    nb = copy.deepcopy(nb)
    folder = Path(reports) / chapter
    cells = nb.cells

    # Parameters: the defaults cell and papermill's injected cell become one table.
    defaults = next((c for c in cells if "parameters" in c.metadata.get("tags", [])), None)
    injected = next((c for c in cells if "injected-parameters" in c.metadata.get("tags", [])), None)
    params_cell = None
    if defaults is not None or injected is not None:
        import nbformat
        params_cell = nbformat.v4.new_markdown_cell(params_table(_text(defaults.source) if defaults else "",
                                                                 _text(injected.source) if injected else ""))
        first = cells.index(defaults if defaults is not None else injected)
        cells = [c for c in cells if c is not defaults and c is not injected]
        cells.insert(first, params_cell)

    # Targets: numbered sections, figures and tables (their captions), display equations.
    targets = {"s": set(), "fig": set(), "table": set(), "eq": set()}
    for c in cells:
        if c.cell_type == "markdown" and c is not params_cell:
            c.source, found = label_sections(_text(c.source), chapter)
            targets["s"] |= found
            c.source, numbers = label_equations(c.source, chapter, len(targets["eq"]) + 1)
            targets["eq"] |= set(numbers)
    for c in cells:
        for o in c.get("outputs", []):
            m = CAPTION.match(_text(o.get("data", {}).get("text/markdown", "")))
            if m:
                targets["fig" if m.group(1) == "Figure" else "table"].add(m.group(2))

    # Code cells: hide the input of plotting/setup/bookkeeping cells, drop stderr, figures as <img>.
    for c in cells:
        if c.cell_type != "code":
            continue
        role = cell_role(_text(c.source))
        tags = list(c.metadata.get("tags", []))
        if role and "hide-input" not in tags:
            tags.append("hide-input")
        c.metadata["tags"] = tags
        outputs = [o for o in c.outputs if not (o.output_type == "stream" and o.get("name") == "stderr")]
        for i, o in enumerate(outputs):
            data = o.get("data", {})
            if "image/png" in data:
                cap = None
                if i + 1 < len(outputs):
                    cap = CAPTION.match(_text(outputs[i + 1].get("data", {}).get("text/markdown", "")))
                if cap and cap.group(1) == "Figure" and cap.group(3) and (folder / "figures" / cap.group(3)).exists():
                    png = folder / "figures" / cap.group(3)
                    w, h = png_size(png)
                    alt = plain_text(f"Figure {cap.group(2)}. {cap.group(4)}")
                    o["data"] = {"text/html": figure_html(f"../{chapter}/figures/{png.name}", alt, w, h,
                                                          anchor(chapter, "fig", cap.group(2)))}
                    o["metadata"] = {}
            md = data.get("text/markdown")
            if md is not None:
                text = _text(md)
                cap = CAPTION.match(text)
                if cap and cap.group(1) == "Table":        # numbered table captions get the table's id
                    text = f'<span id="{anchor(chapter, "table", cap.group(2))}"></span>' + text
                data["text/markdown"] = link_crossrefs(text, chapter, targets)
        c.outputs = outputs

    # Markdown cells: cross-references and citations.
    for c in cells:
        if c.cell_type == "markdown" and c is not params_cell:
            c.source = link_crossrefs(_text(c.source), chapter, targets)

    # Verdicts at a glance, under the title cell.
    counts = claims_summary(folder / "tables" / "claims.csv")
    claims_section = _claims_section(cells)
    if counts:
        import nbformat
        where = (f' (the claims table is in <a class="kexue-xref" href="#{anchor(chapter, "s", claims_section)}">'
                 f'§{claims_section}</a>)') if claims_section in targets["s"] else ""
        glance = nbformat.v4.new_markdown_cell(
            f'<p class="kexue-glance"><b>Verdicts at a glance:</b> {html.escape(counts)}{where}.</p>')
        cells.insert(1 if cells and cells[0].cell_type == "markdown" else 0, glance)
    nb.cells = cells
    nb.metadata.pop("papermill", None)
    return nb


def _claims_section(cells) -> str | None:
    """The number of the section whose code writes the claims table (`report.claims(`)."""
    current = None
    for c in cells:
        if c.cell_type == "markdown":
            for m in HEADING.finditer(_text(c.source)):
                current = m.group(2)
        elif "report.claims(" in _text(c.source):
            return current
    return None


# ---------------------------------------------------------------------------------------------
# Landing page and bibliography


def md_to_html(text: str) -> str:
    """Markdown (with $math$ kept for MathJax) to HTML, as nbconvert renders notebook Markdown."""
    from nbconvert.filters.markdown_mistune import markdown2html_mistune
    return markdown2html_mistune(text)


def make_thumbnail(png: Path, out: Path, width: int = THUMB_WIDTH) -> tuple[int, int]:
    """A PNG thumbnail of `png`, `width` px wide (made at the size it is shown); returns its size."""
    from PIL import Image
    with Image.open(png) as im:
        w, h = im.size
        width = min(width, w)
        height = max(1, round(h * width / w))
        thumb = im.convert("RGB").resize((width, height), Image.LANCZOS)
        thumb = thumb.quantize(colors=256, method=Image.Quantize.MEDIANCUT)   # a palette: a third of the bytes
        out.parent.mkdir(parents=True, exist_ok=True)
        thumb.save(out, format="PNG", optimize=True)
    return width, height


def figure_caption(folder: Path, chapter: str) -> str:
    """The caption of a chapter's headline figure, from `captions.json` ('' when absent)."""
    fig = headline_figure(chapter, folder.parent)
    f = folder / "captions.json"
    if fig is None or not f.exists():
        return ""
    return json.loads(f.read_text(encoding="utf-8")).get(fig.stem, "")


def headline_figure(chapter: str, reports: Path = REPORTS) -> Path | None:
    figs = sorted((Path(reports) / chapter / "figures").glob("*.png"))
    if not figs:
        return None
    named = [f for f in figs if f.stem == HEADLINE.get(chapter)]
    return named[0] if named else figs[0]


INTRO = """A literate reproducibility workbook. Each chapter takes one technique from Su Jianlin's blog
[Scientific Spaces (kexue.fm)](https://kexue.fm), re-derives its formulas with a numerical check after
each step, implements it once in the shared PyTorch package `kexue`, trains and measures it, and judges
each claim of the article. A refuted claim is a result. Every number in the book is produced by the
pipeline (`dvc repro`) from the measurements; none is typed by hand. The pages are the executed
notebooks, with plotting and bookkeeping code folded away (click *Show code cell source* to read it)."""

HOW_TO_READ = """## How to read a verdict

Every claim a chapter judges is registered **before** the runs in `claims/NN_slug.yaml`: its words, its
source (the article, the paper it discusses, a reader, or our own probe, anchor or float64 identity), the
rule that decides it, the margin or target in absolute units, the seeds, and a positive control. Each
chapter's section 0 lists every later change of a rule (from that file), and its claims table gives,
per claim, the verdict and its reason, n, the interval the decision used, the margin, the smallest
effect the experiment could have detected and the positive control:

* **supported**: the data are significantly on the claim's side (a 90% interval wholly in the claimed
  direction, inside an equivalence margin, past a target), or an identity holds to its tolerance;
* **contradicted**: the data go against the claim: a significant effect the other way, a gain ruled out
  below the smallest that matters, an equivalence ruled out, a target missed by the whole interval;
* **inconclusive at this scale**: neither, and the reason says why: `straddles`, `underpowered` (the
  experiment could not have detected an effect of the size the claim is about, so its null result
  refutes nothing), `testbed_cannot_discriminate` (the testbed failed its positive control: it could not
  separate two arms known to differ), `unstable_on_rerun` (the verdict changed on a rerun with disjoint
  seeds), `gated` (a precondition failed), `no_exact_test`, ...

Verdicts come from tested rules in `kexue.verdicts`, never from a typed string; the rules' simulated
error rates are in the table below. The counts on this page are the article's claims (and its paper's
and readers'); probes, anchors and identities are counted apart."""



def chapter_rows(reports: Path, thumbs: dict[str, tuple[str, int, int]]) -> str:
    rows = []
    for chapter, (short, title, seed) in BOOK.items():
        d = Path(reports) / chapter
        ran = chapter in CHAPTERS and (d / f"{chapter}.ipynb").exists()
        name = html.escape(f"{chapter[:2]} {short}")
        link = f'<a href="{chapter}.html"><b>{name}</b></a>' if ran else f"<b>{name}</b> (not run yet)"
        thumb = ""
        if chapter in thumbs:
            src, w, h = thumbs[chapter]
            caption = plain_text(figure_caption(d, chapter))
            alt = f"Chapter {chapter[:2]}, headline figure" + (f": {caption}" if caption else "")
            thumb = (f'<a href="{chapter}.html"><img class="kexue-thumb" src="{src}" width="{w}" height="{h}" '
                     f'alt="{html.escape(alt)}"></a>')
        summary = (d / "summary.md").read_text(encoding="utf-8").strip() if (d / "summary.md").exists() else ""
        counts = claims_summary(d / "tables" / "claims.csv") or "no claims table yet"
        rows.append(
            f'<tr><td>{link}<br>{html.escape(title)}<br><a href="{seed_url(chapter)}">kexue.fm/archives/{seed}</a>'
            f'<br>{thumb}</td><td><p class="kexue-counts"><b>Verdicts:</b> {html.escape(counts)}</p>'
            f'{md_to_html(summary) if summary else ""}</td></tr>')
    return ('<table class="kexue-table kexue-chapters"><thead><tr><th>chapter</th><th>what it found</th></tr>'
            '</thead><tbody>' + "".join(rows) + "</tbody></table>")


def status_rows(reports: Path) -> str:
    rows = []
    for chapter in CHAPTERS:
        f = Path(reports) / chapter / "status.json"
        if not f.exists():
            rows.append(f"<tr><td>{chapter}</td><td colspan='5'>not run yet</td></tr>")
            continue
        s = json.loads(f.read_text())
        minutes = s.get("stage_seconds")
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            chapter, s.get("scale", ""), s.get("device", ""),
            f"{minutes / 60:.1f}" if isinstance(minutes, (int, float)) else "",
            s.get("finished_utc", ""), s.get("git_revision", ""))) + "</tr>")
    return ('<table class="kexue-table"><thead><tr><th>chapter</th><th>scale</th><th>device</th>'
            '<th>stage time (min)</th><th>finished (UTC)</th><th>git revision</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")


def _html_block(text: str) -> str:
    """Raw HTML as one MyST block: no blank line inside (a blank line would end the block)."""
    return re.sub(r"\n\s*\n", "\n", text).strip()


def landing_page(reports: Path, thumbs: dict, chapters: list[str]) -> str:
    toc = "\n".join(chapters)
    return f"""# kexue-workbook

{INTRO}

{HOW_TO_READ}

## Operating characteristics of the verdict rules

{_html_block(calibration_html(reports, heading=False))}

## The chapters

{_html_block(chapter_rows(reports, thumbs))}

## Execution status

Where, at what scale and from which commit each chapter's executed notebook was produced.

{_html_block(status_rows(reports))}

The [bibliography](bibliography.md) lists the seed articles, the papers the chapters test and the
reference code.

```{{toctree}}
:hidden:
:caption: Chapters

{toc}
```

```{{toctree}}
:hidden:
:caption: Back matter

bibliography
```
"""


def bibliography_page() -> str:
    out = ["# Bibliography", "",
           "The seed articles, the papers each chapter tests or leans on, and the reference code. "
           "Citations in the chapters link here."]
    for group, heading in BIB_GROUPS.items():
        out += ["", f"## {heading}", ""]
        for e in BIBLIOGRAPHY:
            if e["group"] != group:
                continue
            used = ", ".join(f'<a href="{c}.html">{c[:2]}</a>' for c in e["chapters"] if c in CHAPTERS)
            text = md_to_html(e["text"]).strip().removeprefix("<p>").removesuffix("</p>")
            out.append(f'<p class="kexue-ref" id="ref-{e["key"]}">{text} '
                       f'<a href="{e["url"]}">{e["url"]}</a>{" (chapter " + used + ")" if used else ""}</p>')
            out.append("")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# Sphinx


MATHJAX_CONFIG = r"""window.MathJax = {
  config: ["TeX-AMS-MML_HTMLorMML-full.js"],
  TeX: {extensions: ["AMSmath.js", "AMSsymbols.js", "noErrors.js", "noUndefined.js"]},
  tex2jax: {inlineMath: [["$", "$"], ["\\(", "\\)"]], displayMath: [["$$", "$$"], ["\\[", "\\]"]],
            processEscapes: true, processEnvironments: true,
            // myst-nb marks the notebook "tex2jax_ignore" and its math and outputs as to be processed
            ignoreClass: "tex2jax_ignore|mathjax_ignore|highlight|kexue-params",
            processClass: "tex2jax_process|mathjax_process|math|output_area|cell_output|kexue-glance|kexue-chapters"},
  "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null},
  messageStyle: "none", showMathMenu: false, menuSettings: {assistiveMML: false},
  AuthorInit: function () {
    MathJax.Hub.Register.StartupHook("End", function () { document.documentElement.dataset.mathjax = "done"; });
  }
};
"""

CSS = """
.kexue-figure{overflow-x:auto;margin:0.5em 0 0.2em}
.kexue-figure img{display:block}
.kexue-table{border-collapse:collapse;margin:0.5em 0 1em;font-size:0.85em;display:block;overflow-x:auto}
.kexue-table th,.kexue-table td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
.kexue-table thead th{background:#f2f2f2}
.kexue-chapters td:first-child{width:340px}
.kexue-thumb{margin-top:6px;border:1px solid #ddd}
.kexue-glance{background:#f4f8fb;border-left:4px solid #5b8db8;padding:6px 10px}
.kexue-params summary{cursor:pointer;font-weight:600}
div.cell_output table.dataframe{display:block;overflow-x:auto}
"""


def sphinx_config() -> dict:
    """The book's Sphinx configuration (the generated conf.py loads it)."""
    return dict(
        project="kexue-workbook", author="kexue-workbook", copyright="the kexue-workbook authors",
        extensions=["myst_nb"], master_doc="index", language="en",
        exclude_patterns=["_build", "**.ipynb_checkpoints"],
        html_theme="sphinx_book_theme", html_title="kexue-workbook",
        html_theme_options={"home_page_in_toc": True, "show_navbar_depth": 1, "show_toc_level": 2,
                            "use_download_button": False, "use_fullscreen_button": False,
                            "use_repository_button": False, "navigation_with_keys": False,
                            "search_bar_text": "Search the book...",
                            "footer_content_items": ["extra-footer"],
                            "extra_footer": "Built by <code>python -m kexue.book</code> from the executed "
                                            "notebooks in <code>reports/</code>; nothing re-executed."},
        # Search results without page summaries: those are fetched from the pages, which a browser
        # refuses over file://.
        html_show_search_summary=False, html_show_copyright=False,
        html_context={"default_mode": "light"},  # no dark mode: figures are drawn on white
        html_static_path=["_static"], html_css_files=["kexue.css"],
        html_copy_source=False, html_show_sourcelink=False, html_last_updated_fmt=None,
        html_use_index=False, html_domain_indices=False, html_permalinks_icon="#",
        nb_execution_mode="off", nb_output_stderr="remove", nb_render_markdown_format="myst",
        nb_merge_streams=True,
        myst_enable_extensions=["dollarmath", "amsmath"], myst_heading_anchors=0,
        math_number_all=True, numfig=False,
        mathjax_path=MATHJAX, mathjax_config_path="mathjax_config.js",
        suppress_warnings=["misc.highlighting_failure", "mystnb.unknown_mime_type"],
    )


CONF_PY = '''# Generated by kexue.book: the Sphinx configuration lives in the package.
from kexue.book import sphinx_config, sphinx_setup
globals().update(sphinx_config())
setup = sphinx_setup
'''


def sphinx_setup(app) -> None:
    app.set_html_assets_policy("always")      # MathJax on every page (the landing page's math is raw HTML)


def write_sources(reports: Path, src: Path) -> list[str]:
    """Generated Sphinx sources in `src`: conf.py, the prepared notebooks, landing and bibliography pages."""
    import nbformat
    if src.exists():
        shutil.rmtree(src)
    (src / "_static").mkdir(parents=True)
    (src / "conf.py").write_text(CONF_PY, encoding="utf-8")
    (src / "mathjax_config.js").write_text(MATHJAX_CONFIG, encoding="utf-8")
    (src / "_static" / "kexue.css").write_text(CSS, encoding="utf-8")
    chapters = []
    for chapter in CHAPTERS:
        ipynb = Path(reports) / chapter / f"{chapter}.ipynb"
        if not ipynb.exists():
            continue
        nb = prepare_notebook(nbformat.read(ipynb, as_version=4), chapter, reports)
        nbformat.write(nb, src / f"{chapter}.ipynb")
        chapters.append(chapter)
    return chapters


def build(reports: Path = REPORTS, out: Path = OUT, src: Path = SOURCE, quiet: bool = True) -> Path:
    """Build the book into `out` (replaced only when the build succeeds)."""
    from sphinx.cmd.build import build_main
    reports, out, src = Path(reports), Path(out), Path(src)
    chapters = write_sources(reports, src)
    # Thumbnails: written into the output after the build, at the size the landing page shows them.
    thumbs, thumb_files = {}, {}
    for chapter in chapters:
        fig = headline_figure(chapter, reports)
        if fig is not None:
            thumb_files[chapter] = fig
            thumbs[chapter] = (f"_thumbs/{chapter}.png",) + _thumb_size(fig)
    (src / "index.md").write_text(landing_page(reports, thumbs, chapters), encoding="utf-8")
    (src / "bibliography.md").write_text(bibliography_page(), encoding="utf-8")
    staging = src.parent / f"{src.name}-html"      # myst-nb writes jupyter_execute/ beside it
    if staging.exists():
        shutil.rmtree(staging)
    doctrees = src.parent / f"{src.name}-doctrees"
    args = ["-b", "html", "-E", "-a", "-n", "-d", str(doctrees), str(src), str(staging)]
    if quiet:
        args.insert(0, "-q")
    status = build_main(args)
    if status != 0:
        raise RuntimeError(f"sphinx-build failed (status {status}); sources in {src}")
    for chapter, fig in thumb_files.items():
        make_thumbnail(fig, staging / "_thumbs" / f"{chapter}.png")
    prune(staging)
    if out.exists():
        shutil.rmtree(out)
    shutil.move(staging, out)
    return out


# What a reader's browser never loads: Sphinx's build records, the theme's source maps (fetched only by
# developer tools) and its translations (the book is in English).
PRUNE = (".buildinfo", ".buildinfo.bak", "objects.inv", "_sources", "_static/locales")


def prune(site: Path) -> None:
    """Remove from a built site what no page loads (PRUNE, and every `*.map`)."""
    for rel in PRUNE:
        p = Path(site) / rel
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    for m in Path(site).rglob("*.map"):
        m.unlink()


def _thumb_size(png: Path, width: int = THUMB_WIDTH) -> tuple[int, int]:
    w, h = png_size(png)
    width = min(width, w)
    return width, max(1, round(h * width / w))


def site_size(out: Path) -> int:
    return sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", type=Path, default=REPORTS)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = build(a.reports, a.out, quiet=not a.verbose)
    print(f"book: {out} ({site_size(out) / 2**20:.1f} MiB, {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
