"""`dvc plots` pages that open offline: `python -m kexue.plots diff [ARGS...]` (or `show`).

Runs `dvc plots diff ARGS` (or `show`), then rewrites the page's three `<script>` tags, which
load Vega, Vega-Lite and Vega-Embed from a CDN (a blank page without the network), to local
copies: the versions dvc-render names, from npm, kept in `kexue/vendor/vega/` (PROVENANCE.md
there says where from) and copied beside the page into `vendor/`. `make_offline(page)` does the
rewrite alone, for a page written some other way. The page goes to `dvc_plots/` (git-ignored)
unless `-o/--out` says otherwise.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

VENDOR = Path(__file__).resolve().parent / "vendor" / "vega"
FILES = {"vega": "vega.min.js", "vega-lite": "vega-lite.min.js", "vega-embed": "vega-embed.min.js"}
CDN_SCRIPT = re.compile(r'<script\s+src\s*=\s*"https?://[^"]*/npm/(vega|vega-lite|vega-embed)@[^"]*"\s*>\s*</script>')
NETWORK_SCRIPT = re.compile(r'<script[^>]+src\s*=\s*"https?://', re.I)


class PlotsError(RuntimeError):
    """The page could not be made to work offline."""


def make_offline(page: Path) -> Path:
    """Point `page`'s Vega script tags at local copies (copied into `vendor/` beside it).

    Returns the page. A page that still loads any script from the network afterwards (a tag
    this does not know) is a `PlotsError`, so a blank page offline never passes silently.
    """
    page = Path(page)
    if not page.is_file():
        raise PlotsError(f"{page}: no such page")
    html = page.read_text(encoding="utf8")
    (page.parent / "vendor").mkdir(exist_ok=True)

    def local(m: re.Match) -> str:
        name = FILES[m.group(1)]
        shutil.copyfile(VENDOR / name, page.parent / "vendor" / name)
        return f'<script src="vendor/{name}"></script>'

    html = CDN_SCRIPT.sub(local, html)
    if not re.search(r"<meta[^>]+charset", html, re.I):       # Vega's axis labels use U+2212 for minus
        html = re.sub(r"<head>", '<head>\n    <meta charset="utf-8">', html, count=1, flags=re.I)
    left = NETWORK_SCRIPT.findall(html)
    if left:
        raise PlotsError(f"{page}: still loads {len(left)} script(s) from the network after the rewrite")
    page.write_text(html, encoding="utf8")
    return page


def output_page(args: list[str]) -> Path:
    """Where `dvc plots` writes its page for these arguments: `-o/--out DIR`, default `dvc_plots`."""
    out = "dvc_plots"
    for i, a in enumerate(args):
        if a in ("-o", "--out") and i + 1 < len(args):
            out = args[i + 1]
        elif a.startswith("--out="):
            out = a.split("=", 1)[1]
    return Path(out) / "index.html"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("diff", "show"):
        print("usage: python -m kexue.plots {diff,show} [dvc plots arguments...]\n" + __doc__, file=sys.stderr)
        return 2
    if any(a in ("--json", "--show-vega") for a in argv):
        print("error: --json/--show-vega print a spec, not a page: call dvc plots directly", file=sys.stderr)
        return 2
    done = subprocess.run([sys.executable, "-m", "dvc", "plots", *argv])
    if done.returncode != 0:
        return done.returncode
    try:
        page = make_offline(output_page(argv[1:]))
    except PlotsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"offline page: {page} (Vega from {page.parent / 'vendor'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
