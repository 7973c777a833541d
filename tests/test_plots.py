"""kexue.plots: `dvc plots` pages with Vega from local copies (no network)."""
import hashlib
import os
import re
import subprocess
import sys

import pytest

from kexue import plots

PAGE = '''<!DOCTYPE html><html><head>
    <script src="https://cdn.jsdelivr.net/npm/vega@5.20.2"></script>
    <script src="https://cdn.jsdelivr.net/npm/vega-lite@5.2.0"></script>
    <script src="https://cdn.jsdelivr.net/npm/vega-embed@6.18.2"></script>
</head><body><div id="p"></div></body></html>'''

SHA256 = {  # vendor/vega/PROVENANCE.md
    "vega.min.js": "4794d0169cb1f3ebad8117fe98ba5bd652dd725905ec0384e832391dbccb03be",
    "vega-lite.min.js": "d73157451b3978015ab31dacd55ff90d986ab8663fc0abed50f97b3cd90002cb",
    "vega-embed.min.js": "1ba9826431ddc9805e815ad92acc811c819f2bfd32bda2a128b8c4b5070fab5e",
}


def test_vendored_files_are_the_recorded_ones():
    for name, sha in SHA256.items():
        assert hashlib.sha256((plots.VENDOR / name).read_bytes()).hexdigest() == sha, name
    assert "vega@5.20.2" in (plots.VENDOR / "PROVENANCE.md").read_text()


def test_make_offline_rewrites_the_three_tags(tmp_path):
    page = tmp_path / "index.html"
    page.write_text(PAGE)
    plots.make_offline(page)
    html = page.read_text()
    assert "http" not in html
    assert '<meta charset="utf-8">' in html and html.count("charset") == 1
    plots.make_offline(page)                                     # twice: nothing more changes
    assert page.read_text() == html
    assert re.findall(r'src="([^"]+)"', html) == ["vendor/vega.min.js", "vendor/vega-lite.min.js",
                                                  "vendor/vega-embed.min.js"]
    for name in SHA256:
        assert (tmp_path / "vendor" / name).read_bytes() == (plots.VENDOR / name).read_bytes()
    page.write_text(PAGE.replace("</head>", '<script src="https://example.org/other.js"></script></head>'))
    with pytest.raises(plots.PlotsError, match="still loads 1 script"):
        plots.make_offline(page)
    with pytest.raises(plots.PlotsError, match="no such page"):
        plots.make_offline(tmp_path / "none.html")


def test_output_page_follows_dvc_arguments():
    assert str(plots.output_page([])) == "dvc_plots/index.html"
    assert str(plots.output_page(["HEAD", "-o", "x"])) == "x/index.html"
    assert str(plots.output_page(["--out=y"])) == "y/index.html"


def test_dvc_plots_diff_page_works_offline(tmp_path):
    """A real `dvc plots diff` in a throw-away repository, through the wrapper."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}

    def sh(*cmd):
        return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    sh("git", "init", "-q")
    sh(sys.executable, "-m", "dvc", "init", "-q")
    (tmp_path / "curve.tsv").write_text("step\tloss\n0\t1.0\n1\t0.5\n2\t0.25\n")
    (tmp_path / "dvc.yaml").write_text("plots:\n  - curve.tsv:\n      x: step\n      y: loss\n")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "base")
    (tmp_path / "curve.tsv").write_text("step\tloss\n0\t1.0\n1\t0.4\n2\t0.1\n")
    out = sh(sys.executable, "-m", "kexue.plots", "diff", "-o", "page")
    assert "offline page: page/index.html" in out.stdout
    html = (tmp_path / "page" / "index.html").read_text()
    assert not re.search(r'<script[^>]+src="https?://', html) and "vegaEmbed" in html
    assert (tmp_path / "page" / "vendor" / "vega.min.js").is_file()
