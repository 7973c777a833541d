"""The figure house style (kexue.figures): each committed figure's recorded size, dpi and smallest
text, read from the PNG, meet the page's rules; and the helpers do what the rules need."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest

from kexue import figures as F
from kexue.config import ROOT
from kexue.report import Report

COMMITTED = sorted((ROOT / "reports").glob("[0-9][0-9]_*/figures/*.png"))


def test_there_are_committed_figures():
    assert len(COMMITTED) >= 10, COMMITTED


@pytest.mark.parametrize("png", COMMITTED, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_committed_figure_is_readable_in_the_book(png):
    facts = F.read_png_facts(png)
    # The record must describe this file: the header's size is the pixels' size.
    h, w = mpimg.imread(png).shape[:2]
    assert (facts["width_px"], facts["height_px"]) == (w, h)
    assert facts["dpi"] == pytest.approx(F.DPI, abs=0.05)
    assert facts["min_font_pt"] > 0, "no text at all: axes, labels or a title are expected"
    assert F.problems(facts, png.name) == []


def test_sample_figures_record_their_tiles():
    tiled = [p for p in COMMITTED if re.search(r"sample|mask", p.stem)]
    assert tiled, "no sample figure committed"
    assert any(F.read_png_facts(p)["min_tile_px"] > 0 for p in tiled)


def test_displayed_size_arithmetic():
    facts = {"width_px": F.COLUMN_PX, "height_px": 300, "dpi": 110.0, "min_font_pt": 7.0, "min_tile_px": 60.0,
             "cut_px": 0.0}
    shown = F.displayed(facts)
    scale = F.NARROW_COLUMN_PX / F.COLUMN_PX
    assert shown["scale"] == pytest.approx(scale)
    assert shown["text_px"] == pytest.approx(7 * 110 / 72 * scale)        # 9.13 px
    assert shown["tile_px"] == pytest.approx(60 * scale)
    assert F.problems(facts) == []
    # A narrow figure is shown at its natural size: no scaling.
    assert F.displayed({**facts, "width_px": 400})["scale"] == 1.0


def test_problems_name_each_broken_rule():
    bad = {"width_px": 2072, "height_px": 487, "dpi": 110.0, "min_font_pt": 7.0, "min_tile_px": 23.0, "cut_px": 40.0}
    out = F.problems(bad, "grid.png")
    assert any("2072 px wide" in p for p in out)
    assert any("smallest text 7 pt" in p for p in out)                    # 7 pt shrunk to 3 px
    assert any("one sample image" in p for p in out)
    assert any("runs 40 px past" in p for p in out)


def test_a_legend_too_wide_for_the_figure_is_counted_as_cut():
    fig, axes = F.figure(1, 2)
    for k in range(8):
        axes[0].plot([0, 1], [k, k], label=f"a rather long label for line number {k}")
    F.legend_below(fig, ncol=8)
    assert F.measure(fig)["cut_px"] > 50
    plt.close(fig)
    fig, axes = F.figure(1, 2)
    for k in range(8):
        axes[0].plot([0, 1], [k, k], label=f"a rather long label for line number {k}")
    F.legend_below(fig, ncol=2)
    assert F.measure(fig)["cut_px"] == 0
    plt.close(fig)


def test_house_figure_measures_what_it_draws():
    fig, axes = F.figure(1, 2)
    axes[0].plot([0, 1], [0, 1], label="a")
    axes[1].plot([0, 1], [1, 0], label="b")
    axes[1].set_title("title")
    F.legend_below(fig)
    facts = F.measure(fig)
    assert facts["width_px"] == F.COLUMN_PX and facts["dpi"] == F.DPI
    assert facts["min_font_pt"] == pytest.approx(min(F.STYLE["xtick.labelsize"], F.STYLE["legend.fontsize"]))
    assert F.problems(facts) == []
    axes[0].text(0.5, 0.5, "tiny", fontsize=4)
    assert F.measure(fig)["min_font_pt"] == 4
    assert any("smallest text 4 pt" in p for p in F.problems(F.measure(fig)))
    plt.close(fig)


def test_invisible_text_is_not_measured():
    fig, ax = F.figure()
    t = ax.text(0.5, 0.5, "hidden", fontsize=3)
    t.set_visible(False)
    assert F.measure(fig)["min_font_pt"] >= 7
    plt.close(fig)


def test_figure_rejects_a_width_outside_the_column():
    with pytest.raises(F.FigureStyleError, match="width=1.5"):
        F.figure(width=1.5)


def test_legend_below_sits_outside_every_panel():
    fig, axes = F.figure(1, 3)
    for i, ax in enumerate(axes):
        for k in range(6):
            ax.plot(np.arange(10), np.arange(10) * k, label=f"line {k}")
    leg = F.legend_below(fig)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    box = leg.get_window_extent(r)
    assert len(leg.get_texts()) == 6                                   # one entry per label, not per panel
    for ax in axes:
        assert not box.overlaps(ax.get_window_extent(r))
    plt.close(fig)


def test_legend_below_replaces_the_panels_legends():
    fig, axes = F.figure(1, 2)
    for ax in axes:
        ax.plot([0, 1], [0, 1], label="same")
        ax.legend()
    leg = F.legend_below(fig)
    assert all(ax.get_legend() is None for ax in axes) and len(leg.get_texts()) == 1
    plt.close(fig)


def test_legend_under_sits_below_its_panel():
    fig, axes = F.figure(1, 2)
    for k in range(4):
        axes[0].plot([0, 1], [0, k], label=f"line {k}")
    leg = F.legend_under(axes[0])
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    box, panel = leg.get_window_extent(r), axes[0].get_window_extent(r)
    assert box.y1 <= panel.y0 and F.measure(fig)["cut_px"] == 0
    plt.close(fig)


def test_legend_right_sits_outside_its_panel():
    fig, ax = F.figure(width=0.8)
    ax.plot([0, 1], [0, 1], label="a line with a long label")
    leg = F.legend_right(ax)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    assert not leg.get_window_extent(r).overlaps(ax.get_window_extent(r))
    assert F.measure(fig)["width_px"] <= F.COLUMN_PX
    plt.close(fig)


def test_band_is_clipped_to_the_range():
    fig, ax = F.figure()
    x = np.arange(5.0)
    poly = F.band(ax, x, [-3, -1, 0.5, 0.2, 0.9], [0.5, 1.4, 1.2, 0.8, 2.0], lower=0, upper=1)
    ys = poly.get_paths()[0].vertices[:, 1]
    assert ys.min() == 0 and ys.max() == 1
    # Unclipped where inside the range: the vertex at x = 2 keeps its lower value 0.5.
    verts = poly.get_paths()[0].vertices
    assert np.any(np.isclose(verts[:, 0], 2) & np.isclose(verts[:, 1], 0.5))
    plt.close(fig)


def test_tile_places_each_image_brute_force():
    rng = np.random.default_rng(0)
    imgs = rng.random((7, 1, 4, 3))
    out = F.tile(imgs, cols=3, pad=1, value=-1)
    assert out.shape == (3 * 5 - 1, 3 * 4 - 1)
    for k in range(7):
        r, c = divmod(k, 3)
        np.testing.assert_array_equal(out[r * 5:r * 5 + 4, c * 4:c * 4 + 3], imgs[k, 0])
    assert np.all(out[:, 3] == -1) and np.all(out[4, :] == -1)          # padding between samples
    assert np.all(out[10:, 4:] == -1)                                   # the short last row is blank
    with pytest.raises(F.FigureStyleError, match="one channel"):
        F.tile(rng.random((2, 3, 4, 4)), cols=2)
    with pytest.raises(F.FigureStyleError, match="cols=0"):
        F.tile(imgs, cols=0)


def test_sample_grid_reports_the_displayed_tile():
    fig, axes = F.figure(1, 2)
    F.sample_grid(axes[0], np.zeros((16, 28, 28)), cols=4)
    F.sample_grid(axes[1], np.zeros((64, 28, 28)), cols=8)
    facts = F.measure(fig)
    r = fig.canvas.get_renderer()
    # Independently: the image's extent over the number of samples across, for the finer grid.
    finer = axes[1].images[0].get_window_extent(r)
    assert facts["min_tile_px"] == pytest.approx(min(finer.width / 8, finer.height / 8))
    plt.close(fig)


def test_small_ticks_use_an_offset_not_long_labels():
    fig, ax = F.figure(width=0.5)
    ax.plot([0, 1, 2], [1.0e-4, 1.5e-4, 1.6666667e-4])
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and all(len(re.sub(r"[^0-9]", "", s)) <= 4 for s in labels), labels
    plt.close(fig)


def test_report_figure_writes_the_record(tmp_path):
    rep = Report(dir=tmp_path / "99_test")
    fig, ax = F.figure(width=0.6)
    ax.plot([0, 1], [0, 1])
    expected = F.measure(fig)
    rep.figure(fig, "line", caption="a line")
    facts = F.read_png_facts(tmp_path / "99_test" / "figures" / "line.png")
    assert facts["width_px"] == expected["width_px"] and facts["height_px"] == expected["height_px"]
    assert facts["min_font_pt"] == pytest.approx(expected["min_font_pt"])
    assert facts["dpi"] == pytest.approx(F.DPI, abs=0.05)


def test_report_figure_needs_a_caption(tmp_path):
    rep = Report(dir=tmp_path / "99_test")
    fig, _ = F.figure()
    with pytest.raises(ValueError, match="'bare' has no caption"):
        rep.figure(fig, "bare", caption=" ")
    assert not (tmp_path / "99_test" / "figures" / "bare.png").exists()
    plt.close(fig)


def test_a_png_without_the_record_is_refused(tmp_path):
    fig, ax = plt.subplots()
    path = tmp_path / "plain.png"
    fig.savefig(path)
    plt.close(fig)
    with pytest.raises(F.FigureStyleError, match="no house-style record"):
        F.read_png_facts(path)
    (tmp_path / "x.png").write_bytes(b"GIF89a")
    with pytest.raises(F.FigureStyleError, match="not a PNG"):
        F.read_png_facts(tmp_path / "x.png")
