"""HTML for readers, built offline: chapter pages (nbconvert) and what the front page shares with them.

* Math: MathJax 2 from `reports/assets/mathjax/`, copied from the pinned PyPI package
  `jupyter-server-mathjax` (no CDN), HTML-CSS output with its STIX-Web fonts (the only
  font set that package ships; Chromium loads them over `file://`). Its hidden MathML copy
  for screen readers is off: it asks for TeX fonts the package lacks.
* Chapter pages: JupyterLab's template without network scripts (`templates/kexue`), the
  notebook's own `parameters` cell hidden (papermill's injected cell shows the values that ran),
  and a navigation bar (front page, neighbouring chapters, seed article, figures, tables).
* Tests: `tests/test_browser.py` opens every page in headless Chromium.
"""
from __future__ import annotations

import html
import shutil
from pathlib import Path

ASSETS = "assets"
MATHJAX_KEEP = ("MathJax.js", "LICENSE", "config/", "extensions/", "jax/", "fonts/")
MATHJAX_SKIP = ("extensions/a11y/", "jax/output/SVG/")
TEMPLATES = Path(__file__).parent / "templates"

CSS = """<style>
.kexue-nav{position:sticky;top:0;z-index:10;background:#f7f7f9;border-bottom:1px solid #ddd;
  padding:6px 12px;font:14px/1.5 system-ui,sans-serif}
.kexue-nav a{margin-right:1em}
.kexue-nav .kexue-here{font-weight:600;margin-right:1em}
.kexue-footer{border-top:1px solid #ddd;margin-top:2em;padding:8px 12px;font:13px system-ui,sans-serif;color:#555}
table.kexue-table{border-collapse:collapse;margin:0.5em 0 1em;font-size:13px}
table.kexue-table th,table.kexue-table td{border:1px solid #ccc;padding:3px 8px;text-align:left!important;vertical-align:top}
table.kexue-table thead th{background:#f2f2f2}
.jp-RenderedImage img,figure img{max-width:100%;height:auto}
</style>"""


def mathjax_head(prefix: str) -> str:
    """Script tags that typeset `$...$` and `$$...$$` with the local MathJax under `prefix`."""
    return f"""<script type="text/x-mathjax-config">
MathJax.Hub.Config({{
  TeX: {{extensions: ["AMSmath.js", "AMSsymbols.js", "noErrors.js", "noUndefined.js"]}},
  tex2jax: {{inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]], displayMath: [["$$", "$$"], ["\\\\[", "\\\\]"]],
            processEscapes: true, processEnvironments: true}},
  "HTML-CSS": {{availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null}},
  messageStyle: "none", showMathMenu: false, menuSettings: {{assistiveMML: false}}
}});
MathJax.Hub.Queue(function () {{ document.documentElement.dataset.mathjax = "done"; }});
</script>
<script src="{html.escape(prefix)}{ASSETS}/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"></script>"""


def install_assets(reports: Path) -> Path:
    """Copy the MathJax subset the pages use into `reports/assets/mathjax`; return that folder."""
    import jupyter_server_mathjax
    src = Path(jupyter_server_mathjax.__file__).parent / "static"
    dest = Path(reports) / ASSETS / "mathjax"
    if dest.exists():
        shutil.rmtree(dest)
    for f in sorted(src.rglob("*")):
        rel = f.relative_to(src).as_posix()
        if f.is_file() and rel.startswith(MATHJAX_KEEP) and not rel.startswith(MATHJAX_SKIP):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest / rel)
    return dest


def nav(here: str | None, prefix: str) -> str:
    """The bar on top of every page: front page, then every chapter (planned ones unlinked)."""
    from .chapters import BOOK, CHAPTERS
    items = [f'<a href="{prefix}index.html">kexue-workbook</a>' if here else
             '<span class="kexue-here">kexue-workbook</span>']
    for chapter, (short, title, _) in BOOK.items():
        label = html.escape(chapter[:2] + " " + short)
        if chapter == here:
            items.append(f'<span class="kexue-here" title="{html.escape(title)}">{label}</span>')
        elif chapter in CHAPTERS:
            items.append(f'<a href="{prefix}{chapter}/{chapter}.html" title="{html.escape(title)}">{label}</a>')
        else:
            items.append(f'<span title="planned">{label} (planned)</span>')
    return '<nav class="kexue-nav">' + " ".join(items) + "</nav>"


def chapter_footer(chapter: str, folder: Path) -> str:
    """Links to the chapter's seed article, its figures, tables and machine-readable outputs."""
    from .chapters import BOOK, seed_url
    title = BOOK[chapter][1] if chapter in BOOK else chapter
    links = [f'Seed article: <a href="{seed_url(chapter)}">{seed_url(chapter)}</a>'] if chapter in BOOK else []
    links += ['<a href="../index.html">front page</a>',
             f'<a href="{chapter}.ipynb">{chapter}.ipynb</a>']
    for name in ("metrics.json", "params.yaml", "benchmark.md"):
        if (folder / name).exists():
            links.append(f'<a href="{name}">{name}</a>')
    figs = sorted((folder / "figures").glob("*.png"))
    tables = sorted((folder / "tables").glob("*.csv"))
    out = " · ".join(links)
    if figs:
        out += "<br>Figures: " + " · ".join(f'<a href="figures/{f.name}">{html.escape(f.stem)}</a>' for f in figs)
    if tables:
        out += "<br>Tables: " + " · ".join(f'<a href="tables/{t.name}">{html.escape(t.stem)}</a>' for t in tables)
    return f'<footer class="kexue-footer"><b>{html.escape(title)}</b><br>{out}</footer>'


def chapter_header(chapter: str) -> str:
    from .chapters import BOOK, seed_url
    seed = (f'Seed article: <a href="{seed_url(chapter)}">{seed_url(chapter)}</a> · ' if chapter in BOOK else "")
    return (nav(chapter, "../") + '<p class="kexue-footer" style="border:0;margin:0">'
            + seed + '<a href="#kexue-files">figures, tables and files</a></p>')


def render_chapter(ipynb: Path, out_html: Path, chapter: str) -> Path:
    """The executed notebook as a standalone page in `reports/CHAPTER/` (links relative to it)."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor
    nb = nbformat.read(ipynb, as_version=4)
    exporter = HTMLExporter(template_name="kexue", extra_template_basedirs=[str(TEMPLATES)])
    hide = TagRemovePreprocessor(remove_cell_tags={"parameters"}, enabled=True)
    exporter.register_preprocessor(hide, enabled=True)
    footer = chapter_footer(chapter, Path(out_html).parent).replace("<footer ", '<footer id="kexue-files" ', 1)
    resources = {"kexue_mathjax": mathjax_head("../"), "kexue_css": CSS,
                 "kexue_nav": chapter_header(chapter), "kexue_footer": footer}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    Path(out_html).write_text(body, encoding="utf-8")
    return Path(out_html)
