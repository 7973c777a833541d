"""The rendered reports in a real browser: headless Chromium driven by selenium and chromedriver.

Every page (`reports/index.html` and each chapter page `reports/NN_slug/NN_slug.html`) is opened
through a file:// URL and `check_page` lists what a reader would see broken:

1. math: the page's MathJax loads and finishes (`data-mathjax="done"` on <html>, set by
   `kexue.html.mathjax_head`), no formula failed (merror, "Math Processing Error"), pages with math
   show typeset formulas, and no raw TeX (`$x_1$`) is left in the visible text outside code;
2. every <img> loads, and chapter pages show at least one figure;
3. every link resolves: local files exist, #fragments name an id (or <a name>) in their target,
   web and mailto links are well-formed (not fetched: there is no network);
4. no script or stylesheet comes from the network;
and the browser console has no SEVERE error (web fonts refused over file:// excepted).

The book (`reports/book/`, `python -m kexue.book`) gets the same checks on every page, and
`check_book_page` adds what a book must do: the sidebar lists every chapter, a chapter page has an
in-page table of contents and previous/next links, the page asks nothing
from another host (the browser's own resource list), every image has alt text and is shown at no
less than 60% of its natural width. `test_book_search` searches a word of each chapter's title and
expects that chapter among the results (Sphinx's index, loaded as a script: offline over file://).

The reports folder is `kexue.config.ROOT / "reports"`, or `$KEXUE_REPORTS` when set. Without
chromium and chromedriver the page tests are skipped, unless `$CI` is set: then they fail.
"""
from __future__ import annotations

import os
import re
import shutil
import struct
import time
import zlib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from kexue.config import ROOT

REPORTS = Path(os.environ.get("KEXUE_REPORTS") or ROOT / "reports")
PAGES = [REPORTS / "index.html"] + sorted(REPORTS.glob("[0-9][0-9]_*/[0-9][0-9]_*.html"))
BOOK = REPORTS / "book"
BOOK_PAGES = sorted(BOOK.glob("*.html"))
BOOK_CHAPTERS = sorted(p.stem for p in BOOK.glob("[0-9][0-9]_*.html"))
MIN_SHOWN = 0.6          # no image shown below this share of its natural width
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")
MATHJAX_TIMEOUT_S = 20
IMAGE_TIMEOUT_S = 10

# `$...$` (or `$$...$$`) with a backslash, ^ or _ inside: TeX that MathJax should have typeset.
RAW_TEX = re.compile(r"\$\$[^$]*[\\^_][^$]*\$\$|\$[^$\n]*[\\^_][^$\n]*\$")
# Text that a reader sees, without code: how the raw-TeX check reads the page (and its source).
# Not all of .jp-InputArea: in JupyterLab's template the rendered markdown cells sit in one too.
NOT_PROSE = "pre, code, .highlight, .jp-CodeCell .jp-InputArea, .jp-InputArea-editor, script, style"
NOT_PROSE_SOURCE = re.compile(r"<(pre|code|script|style)\b.*?</\1\s*>", re.S | re.I)
SOURCE_MATH = re.compile(r"\$\$|\\\(|\\\[|" + RAW_TEX.pattern)

# Console errors that are not the page's fault: Chromium refuses web fonts over file:// (CORS), and
# MathJax's HTML-CSS output probes for fonts with a blank font at about:blank, which fails likewise.
ALLOWED_CONSOLE = (re.compile(r"font.*CORS|CORS.*font", re.I | re.S),
                   re.compile(r"^about:blank - Failed to load resource"))


# ---------------------------------------------------------------------------------------------
# The browser


def have_browser() -> bool:
    return Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    """One headless Chromium for the whole module; selenium-manager never runs (the driver is given)."""
    if not have_browser():
        msg = (f"chromium ({CHROMIUM}) or chromedriver ({CHROMEDRIVER}) missing: "
               "apt-get install chromium chromium-driver")
        if os.environ.get("CI"):
            pytest.fail(msg + " (CI is set: the browser test must run)")
        pytest.skip(msg)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(60)
    yield browser
    browser.quit()


# ---------------------------------------------------------------------------------------------
# The checks


def check_page(driver, path: Path) -> list[str]:
    """Open `path` (an HTML file) in the browser; return the problems found, [] when none."""
    path = Path(path).resolve()
    is_chapter = re.fullmatch(r"\d\d_.+", path.stem) is not None and path.parent.name == path.stem
    source = path.read_text(encoding="utf-8", errors="replace")
    driver.get_log("browser")                                     # drop the previous page's messages
    driver.get(path.as_uri())
    wait_loaded(driver)
    problems = check_math(driver, source, is_chapter)
    problems += check_images(driver, is_chapter)
    problems += check_links(driver, path)
    problems += check_no_network_assets(driver)
    problems += check_console(driver)
    return problems


def wait_loaded(driver, timeout_s: float = 30) -> None:
    """Until the document has loaded: under load, chromedriver's get() can return while the new
    page is still 'loading' (seen with the book's pages), before its scripts are in the DOM."""
    deadline = time.monotonic() + timeout_s
    while driver.execute_script("return document.readyState") != "complete" and time.monotonic() < deadline:
        time.sleep(0.1)


def check_math(driver, source: str, is_chapter: bool) -> list[str]:
    uses_mathjax = driver.execute_script(
        "return document.querySelector('script[src*=\"MathJax.js\"]') !== null")
    has_math = is_chapter or bool(SOURCE_MATH.search(NOT_PROSE_SOURCE.sub("", source)))
    problems = []
    if has_math and not uses_mathjax:
        problems.append("page has math but loads no local MathJax (no <script src=...MathJax.js>)")
    if uses_mathjax:
        problems += wait_for_mathjax(driver)
        if not problems:
            problems += typesetting_errors(driver, has_math)
    problems += raw_tex(driver)
    return problems


def wait_for_mathjax(driver) -> list[str]:
    """[] once MathJax's queue has finished; a problem if MathJax is absent or never finishes."""
    # MathJax.js is a plain <script> in <head>: once the page has loaded it has run, or failed.
    if not driver.execute_script("return !!(window.MathJax && window.MathJax.Hub)"):
        src = driver.execute_script("return document.querySelector('script[src*=\"MathJax.js\"]').src")
        return [f"MathJax never loaded (window.MathJax undefined): is {src} there? "
                "(kexue.html.install_assets puts it in reports/assets/mathjax)"]
    deadline = time.monotonic() + MATHJAX_TIMEOUT_S
    while time.monotonic() < deadline:
        if driver.execute_script("return document.documentElement.dataset.mathjax") == "done":
            return []
        time.sleep(0.2)
    return [f"MathJax loaded but did not finish typesetting within {MATHJAX_TIMEOUT_S} s "
            "(<html data-mathjax> never became 'done')"]


TYPESET_STATE = """
const bad = [];
function walk(node, tex) {                    // MathJax's internal MathML tree of one formula
  if (!node || typeof node !== 'object') return;
  if (node.type === 'merror') bad.push('TeX error in ' + tex);
  if (node.type === 'mtext' && node.mathcolor === 'red') bad.push('undefined macro in ' + tex);
  (node.data || []).forEach(child => walk(child, tex));
}
MathJax.Hub.getAllJax().forEach(jax => walk(jax.root, JSON.stringify(jax.originalText)));
return {
  typeset: document.querySelectorAll('.MathJax, .MathJax_Display, .MathJax_SVG, .mjx-chtml').length,
  errorNodes: document.querySelectorAll('.MathJax_Error, .merror, merror, .noError').length,
  processingError: document.body.innerText.includes('Math Processing Error'),
  bad: bad,
};
"""


def typesetting_errors(driver, has_math: bool) -> list[str]:
    state = driver.execute_script(TYPESET_STATE)
    problems = []
    if has_math and state["typeset"] == 0:
        problems.append("no typeset formula (no .MathJax element) although the page has math")
    if state["processingError"]:
        problems.append("'Math Processing Error' shown on the page")
    if state["errorNodes"] and not state["bad"]:
        problems.append(f"{state['errorNodes']} MathJax error element(s) (.MathJax_Error/.merror/.noError)")
    problems += [b[:200] for b in state["bad"][:5]]
    if len(state["bad"]) > 5:
        problems.append(f"... and {len(state['bad']) - 5} more formulas with errors")
    return problems


VISIBLE_PROSE = """
const style = document.createElement('style');
style.textContent = arguments[0] + ' {display: none !important}';
document.head.appendChild(style);
const text = document.body.innerText;          // what a reader sees, now without code
style.remove();
return text;
"""


def raw_tex(driver) -> list[str]:
    """`$...$` TeX left visible in the text outside code (MathJax did not typeset it)."""
    hits = RAW_TEX.findall(driver.execute_script(VISIBLE_PROSE, NOT_PROSE))
    if not hits:
        return []
    shown = ", ".join(repr(h[:80]) for h in hits[:5])
    return [f"{len(hits)} raw TeX span(s) visible, e.g. {shown}"]


IMAGES = "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"


def check_images(driver, is_chapter: bool) -> list[str]:
    deadline = time.monotonic() + IMAGE_TIMEOUT_S
    images = driver.execute_script(IMAGES)
    while not all(complete for _, complete, _ in images) and time.monotonic() < deadline:
        time.sleep(0.2)
        images = driver.execute_script(IMAGES)
    problems = [f"image does not load: {short(src)}" for src, complete, width in images
                if not (complete and width > 0)]
    if is_chapter and not images:
        problems.append("chapter page shows no image (figures should be inline)")
    return problems


LINKS = """
return Array.from(document.querySelectorAll('a[href]')).map(a => [a.getAttribute('href'), a.href]);
"""
HAS_TARGET = """
const name = arguments[0];
return document.getElementById(name) !== null ||
       Array.from(document.getElementsByName(name)).some(e => e.tagName === 'A');
"""


def check_links(driver, page: Path) -> list[str]:
    problems = []
    for href, url in driver.execute_script(LINKS):
        parts = urlsplit(url)
        if parts.scheme in ("http", "https"):
            if not re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+(:\d+)?", parts.netloc) or " " in url:
                problems.append(f"malformed web link: {short(href)}")
        elif parts.scheme == "mailto":
            if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", parts.path):
                problems.append(f"malformed mailto link: {short(href)}")
        elif parts.scheme == "file":
            problems += check_local_link(driver, page, href, parts)
        else:
            problems.append(f"link with unexpected scheme {parts.scheme!r}: {short(href)}")
    return problems


def check_local_link(driver, page: Path, href: str, parts) -> list[str]:
    target = Path(unquote(parts.path))
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        return [f"broken link: {short(href)} (no file {target})"]
    if not parts.fragment:
        return []
    # As browsers do: the fragment as written names the element, or else its percent-decoded form
    # (nbconvert writes heading ids percent-encoded: id="Chapter-01-%E2%80%94-...").
    names = {parts.fragment, unquote(parts.fragment)}
    if target.resolve() == page:
        found = any(driver.execute_script(HAS_TARGET, name) for name in names)
    elif target.suffix.lower() in (".html", ".htm"):
        found = bool(names & anchors_in(target))
    else:
        return []                                   # a fragment into a notebook, CSV...: not checked
    return [] if found else [f"broken fragment: {short(href)} "
                             f"(no id or <a name> {unquote(parts.fragment)!r} in {target.name})"]


class _Anchors(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.names = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if value is not None and (key == "id" or (key == "name" and tag == "a")):
                self.names.add(value)


def anchors_in(html_file: Path) -> set[str]:
    """The ids (and <a name>s) of another page, read from its file."""
    parser = _Anchors()
    parser.feed(html_file.read_text(encoding="utf-8", errors="replace"))
    return parser.names


NETWORK_ASSETS = """
return Array.from(document.querySelectorAll('script[src], link[rel~="stylesheet"][href]'))
  .map(e => e.getAttribute('src') || e.getAttribute('href'))
  .filter(u => /^(https?:)?\\/\\//i.test(u.trim()));
"""


def check_no_network_assets(driver) -> list[str]:
    return [f"loaded from the network: {short(u)}" for u in driver.execute_script(NETWORK_ASSETS)]


def check_console(driver) -> list[str]:
    return [f"console error: {short(e['message'], 300)}" for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and not any(p.search(e["message"]) for p in ALLOWED_CONSOLE)]


def short(text: str | None, n: int = 120) -> str:
    text = str(text)
    return text if len(text) <= n else text[:n] + "..."


# ---------------------------------------------------------------------------------------------
# The book


BOOK_STATE = """
const side = document.querySelector('#bd-docs-nav, .bd-sidebar-primary nav, .bd-sidebar-primary');
const here = location.pathname.split('/').pop();
const sidebar = side ? Array.from(side.querySelectorAll('a[href]')).map(a => {
  const h = a.getAttribute('href');
  return (h === '#' || h === '') ? here : h.split('#')[0].split('/').pop();
}) : null;
const images = Array.from(document.images).map(i => {
  const r = i.getBoundingClientRect();
  return {src: i.getAttribute('src'), alt: i.getAttribute('alt'), natural: i.naturalWidth,
          shown: r.width, visible: i.offsetParent !== null && r.width > 0};
});
const requests = performance.getEntriesByType('resource').map(e => e.name)
  .filter(u => !/^(file|data|about|blob):/i.test(u));
const pageToc = document.querySelectorAll('.bd-sidebar-secondary nav.page-toc a[href^="#"]').length;
const prevNext = document.querySelectorAll('.prev-next-area a[href]').length;
return {sidebar: sidebar, images: images, requests: requests, pageToc: pageToc, prevNext: prevNext};
"""


def check_book_page(driver, path: Path, chapters: list[str]) -> list[str]:
    """The general checks (`check_page`), then the book's own; [] when none fails."""
    problems = check_page(driver, path)
    state = driver.execute_script(BOOK_STATE)
    if state["sidebar"] is None:
        problems.append("no sidebar (primary navigation) on the page")
    else:
        problems += [f"sidebar does not list chapter {c}" for c in chapters if f"{c}.html" not in state["sidebar"]]
    problems += [f"request to another host: {short(u)}" for u in state["requests"]]
    if path.stem in chapters:
        if state["pageToc"] < 2:
            problems.append(f"chapter page without an in-page table of contents ({state['pageToc']} entries)")
        if state["prevNext"] < 1:
            problems.append("chapter page without previous/next links")
        if not state["images"]:
            problems.append("chapter page shows no figure")
    for img in state["images"]:
        alt = (img["alt"] or "").strip()
        if not alt or alt.startswith("No description has been provided"):
            problems.append(f"image without alt text: {short(img['src'])}")
        if img["visible"] and img["natural"] and img["shown"] < MIN_SHOWN * img["natural"] - 0.5:
            problems.append(f"image shown at {img['shown']:.0f} of its {img['natural']} px "
                            f"(< {MIN_SHOWN:.0%}): {short(img['src'])}")
    return problems


@pytest.mark.parametrize("page", BOOK_PAGES, ids=lambda p: "book/" + p.name)
def test_book_page_in_browser(driver, page):
    problems = check_book_page(driver, page, BOOK_CHAPTERS)
    assert not problems, f"book/{page.name}:\n  " + "\n  ".join(problems)


def test_the_book_has_every_chapter():
    from kexue.chapters import CHAPTERS
    ran = [c for c in CHAPTERS if (REPORTS / c / f"{c}.ipynb").exists()]
    assert BOOK_PAGES, f"no book in {BOOK}: python -m kexue.book"
    assert BOOK_CHAPTERS == ran, "the book's chapters differ from the executed notebooks: python -m kexue.book"


SEARCH_RESULTS = """
const box = document.querySelector('#search-results');
const done = box && /Search finished|found|did not match/i.test(box.innerText);
return {done: !!done, links: box ? Array.from(box.querySelectorAll('a[href]')).map(a => a.getAttribute('href')) : []};
"""


def search(driver, term: str, timeout_s: float = 15) -> list[str]:
    """The result links of the book's search page for `term` ([] if it never finishes)."""
    driver.get((BOOK / "search.html").resolve().as_uri() + "?q=" + term)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = driver.execute_script(SEARCH_RESULTS)
        if state["done"]:
            return state["links"]
        time.sleep(0.2)
    return []


def title_word(page: Path) -> str:
    """The longest plain word of a chapter page's <h1> (what a reader might search for)."""
    h1 = re.search(r"<h1[^>]*>(.*?)</h1>", page.read_text(encoding="utf-8"), re.S).group(1)
    words = re.findall(r"[A-Za-z]{5,}", re.sub(r"<[^>]+>", " ", h1))
    return max(words, key=len)


@pytest.mark.parametrize("chapter", BOOK_CHAPTERS)
def test_book_search(driver, chapter):
    term = title_word(BOOK / f"{chapter}.html")
    links = search(driver, term)
    assert any(link.split("?")[0].split("#")[0].endswith(f"{chapter}.html") for link in links), \
        f"searching {term!r} does not return {chapter} (results: {links})"
    problems = check_console(driver)
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# The real pages


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPORTS).as_posix())
def test_page_in_browser(driver, page):
    if not page.is_file():
        pytest.fail(f"{page} is missing: build the reports with `dvc repro`")
    problems = check_page(driver, page)
    assert not problems, f"{page.relative_to(REPORTS)}:\n  " + "\n  ".join(problems)


def test_there_are_chapter_pages():
    assert len(PAGES) > 1, f"no chapter page reports/NN_slug/NN_slug.html in {REPORTS}: run `dvc repro`"


# ---------------------------------------------------------------------------------------------
# The checker on synthetic pages: it passes a good page and catches each kind of breakage.

def png_1px() -> bytes:
    """A valid 1x1 white PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xff")) + chunk(b"IEND", b""))


def write_site(root: Path, body: str, *, mathjax: bool = True) -> Path:
    """reports-like folder: root/01_demo/01_demo.html (with `body`), a figure and a second page."""
    from kexue.html import mathjax_head
    chapter = root / "01_demo"
    (chapter / "figures").mkdir(parents=True)
    (chapter / "figures" / "ok.png").write_bytes(png_1px())
    (root / "index.html").write_text("<!doctype html><title>front</title><h1 id='top'>front</h1>\n")
    head = mathjax_head("../") if mathjax else ""
    page = chapter / "01_demo.html"
    page.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>demo</title>{head}</head>"
                    f"<body>{body}</body></html>\n", encoding="utf-8")
    return page


GOOD_BODY = r"""
<h1 id="intro">Demo</h1>
<p>Inline $x_1 + \alpha^2$ and display $$\sum_{t=1}^T g_t^2.$$</p>
<pre>price = "$a_b$"  # code is not math</pre>
<p><img src="figures/ok.png" alt="ok"></p>
<p><a href="#intro">here</a> <a href="../index.html#top">front</a> <a href="../">folder</a>
<a href="figures/ok.png?v=1">figure</a> <a href="https://kexue.fm/archives/7387">seed</a>
<a href="mailto:someone@example.org">mail</a></p>
"""


@pytest.fixture(scope="module")
def mathjax_site(tmp_path_factory):
    """A folder with the MathJax assets installed, as in reports/."""
    from kexue.html import install_assets
    root = tmp_path_factory.mktemp("site")
    install_assets(root)
    return root


def test_checker_passes_good_page(driver, mathjax_site):
    page = write_site(mathjax_site, GOOD_BODY)
    assert check_page(driver, page) == []


def test_checker_catches_broken_image_link_and_fragment(driver, mathjax_site, tmp_path):
    body = GOOD_BODY + """
<p><img src="figures/missing.png"></p>
<p><a href="no_such_page.html">gone</a> <a href="#nowhere">same page</a>
<a href="../index.html#nowhere-else">other page</a> <a href="http://bad host/x">web</a>
<script src="https://cdn.example.org/lib.js"></script></p>
"""
    site = tmp_path / "site"
    shutil.copytree(mathjax_site / "assets", site / "assets")
    problems = "\n".join(check_page(driver, write_site(site, body)))
    assert "image does not load: figures/missing.png" in problems
    assert "broken link: no_such_page.html" in problems
    assert "broken fragment: #nowhere" in problems
    assert "broken fragment: ../index.html#nowhere-else" in problems
    assert "malformed web link: http://bad host/x" in problems
    assert "loaded from the network: https://cdn.example.org/lib.js" in problems
    assert "console error" in problems                        # the missing image, from Chromium


def test_checker_catches_math_without_mathjax_assets(driver, tmp_path):
    markdown_cell = ('<div class="jp-Cell jp-MarkdownCell"><div class="jp-InputArea jp-Cell-inputArea">'
                     '<div class="jp-RenderedMarkdown"><p>Raw $x_1$ here.</p>'
                     '<p>$$\\sum_t g_t^2$$</p></div></div></div>')           # as nbconvert's lab template
    page = write_site(tmp_path, markdown_cell + "<img src='figures/ok.png'>")   # tmp_path has no assets/
    problems = "\n".join(check_page(driver, page))
    assert "MathJax never loaded" in problems
    assert "2 raw TeX span(s)" in problems and "'$x_1$'" in problems


def test_checker_catches_tex_errors_and_missing_figures(driver, mathjax_site, tmp_path):
    site = tmp_path / "site"
    shutil.copytree(mathjax_site / "assets", site / "assets")
    page = write_site(site, r"<p>Broken $\frac{1$ and $\nosuchmacro x$.</p>")
    problems = "\n".join(check_page(driver, page))
    assert "TeX error in" in problems
    assert "undefined macro in" in problems
    assert "chapter page shows no image" in problems


def test_book_checker_catches_missing_chapter_alt_text_and_shrunk_images(driver, mathjax_site, tmp_path):
    site = tmp_path / "site"
    shutil.copytree(mathjax_site / "assets", site / "assets")
    chapter = write_site(site, GOOD_BODY).parent
    (chapter / "figures" / "wide.png").write_bytes(png_wide(400, 10))
    page = chapter / "book.html"
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>b</title></head><body>"
        "<nav id='bd-docs-nav'><a href='#'>this page</a> <a href='01_demo.html'>01</a></nav>"
        "<img src='figures/wide.png' alt='a wide figure' style='width:100px'>"
        "<img src='figures/ok.png'><img src='figures/ok.png' alt='No description has been provided for this image'>"
        "</body></html>\n", encoding="utf-8")
    problems = "\n".join(check_book_page(driver, page, ["01_demo", "02_other", "book"]))
    assert "sidebar does not list chapter 02_other" in problems
    assert "chapter page without an in-page table of contents" in problems
    assert "chapter page without previous/next links" in problems
    assert "chapter page shows no figure" not in problems                 # it has three images
    assert "sidebar does not list chapter 01_demo" not in problems
    assert "image shown at 100 of its 400 px" in problems
    assert problems.count("image without alt text: figures/ok.png") == 2
    page.write_text("<!doctype html><html><head><meta charset='utf-8'><title>b</title></head><body>"
                    "<img src='figures/wide.png' alt='wide, natural size'></body></html>\n", encoding="utf-8")
    assert check_book_page(driver, page, []) == ["no sidebar (primary navigation) on the page"]


def png_wide(width: int, height: int) -> bytes:
    """A valid white greyscale PNG of the given size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + b"\xff" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
