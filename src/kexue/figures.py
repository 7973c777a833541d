"""The workbook's house style for figures: made for the page they are read on.

Every chapter draws with `figure(...)` and saves through `Report.figure`, which records what the
style promises in the PNG itself (`measure` -> tEXt chunks), so a test can check each committed
figure without rendering it again (`tests/test_figures.py`):

* **Sized for the column.** A full-width figure is `COLUMN_PX` pixels wide at `DPI` (the book's
  text column on a wide screen is about 790 px), so the book shows it at its natural size; in a
  1280-px window the column narrows to `NARROW_COLUMN_PX` and the figure is scaled by 676/792.
* **Text readable as displayed.** The smallest text in the figure, in points, times DPI/72 times
  that narrow-window scale must be at least `MIN_TEXT_PX` (9 px). The style's smallest size is
  7 pt: 7 x 110/72 x 676/792 = 9.1 px.
* **Nothing cut off**: nothing drawn runs past the figure's edge (`measure` says how far it does).
* **Legends outside the data**: `legend_below` (one legend for the figure, under the panels),
  `legend_under` (under one panel) or `legend_right` (beside one panel); constrained layout makes
  room for each.
* **Bands clipped to the quantity's range**: `band(ax, x, lo, hi, lower=0, upper=1)`; a +-sd band of
  a count never runs below 0.
* **Readable ticks**: scientific offsets instead of labels like 0.000166667.
* **Sample grids large enough to compare**: `sample_grid` tiles images and marks the axes image, so
  `measure` can report the displayed size of one sample (at least `MIN_TILE_PX` = 48 px in the
  narrow window; fewer, larger samples beat many tiny ones).
* **Alt text from the caption**: the book writes each image's alt attribute from its caption
  (`kexue.book`), so every `Report.figure` call carries one.
"""
from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402
from matplotlib.text import Text  # noqa: E402

DPI = 110
COLUMN_PX = 792                 # a full-width figure's natural width (7.2 in at DPI)
NARROW_COLUMN_PX = 676          # the book's column in a 1280 x 900 window (measured in Chromium)
MIN_TEXT_PX = 9.0               # smallest text as displayed in that narrow column
MIN_TILE_PX = 48.0              # smallest sample image as displayed in that narrow column
ROW_HEIGHT_IN = 2.5             # height of one row of panels

STYLE = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "figure.constrained_layout.use": True,
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "legend.fontsize": 7.5,
    "legend.title_fontsize": 7.5,
    "figure.titlesize": 9,
    "axes.formatter.limits": (-3, 4),     # 1e-4 as an offset, not 0.000166667
    "axes.formatter.use_mathtext": True,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.3,
    "lines.markersize": 4,
}
TILES_GID = "kexue-tiles:"      # gid of an AxesImage made by `sample_grid`: "kexue-tiles:ROWSxCOLS"


class FigureStyleError(ValueError):
    """A figure breaks the house style (the message names the figure and the value)."""


def figure(nrows: int = 1, ncols: int = 1, *, width: float = 1.0, height: float | None = None, **kw):
    """`plt.subplots` in the house style: `width` is a share of the column, `height` in inches
    (default `ROW_HEIGHT_IN` per row). Returns (fig, axes) like `plt.subplots`."""
    if not 0 < width <= 1:
        raise FigureStyleError(f"width={width!r}: a share of the column, in (0, 1]")
    plt.rcParams.update(STYLE)
    w_in = width * COLUMN_PX / DPI
    h_in = ROW_HEIGHT_IN * nrows if height is None else height
    return plt.subplots(nrows, ncols, figsize=(w_in, h_in), dpi=DPI, layout="constrained", **kw)


def legend_below(fig, ax=None, ncol: int | None = None, **kw):
    """One legend for the whole figure (handles from `ax`, or the first axes that has any), under
    the panels and outside every one of them."""
    axes = [ax] if ax is not None else fig.axes
    handles, labels = [], []
    for a in axes:
        h, l = a.get_legend_handles_labels()
        for hi, li in zip(h, l):
            if li not in labels and not li.startswith("_"):
                handles.append(hi)
                labels.append(li)
    if not handles:
        return None
    for a in fig.axes:                        # the figure's legend replaces the panels' own
        if a.get_legend() is not None:
            a.get_legend().remove()
    ncol = ncol or min(len(labels), 4)
    return fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False, **kw)


def legend_under(ax, ncol: int = 2, **kw):
    """The legend of one panel, under that panel (outside its data; constrained layout makes room)."""
    return ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, frameon=False, **kw)


def legend_right(ax, **kw):
    """The legend beside `ax`, outside its data (constrained layout makes room)."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False, **kw)


def band(ax, x, lo, hi, *, lower: float | None = None, upper: float | None = None, **kw):
    """`fill_between` of [lo, hi] clipped to the quantity's range [lower, upper] (a count's band
    never below 0, a share's never above 1)."""
    lo = np.clip(np.asarray(lo, dtype=float), lower, upper)
    hi = np.clip(np.asarray(hi, dtype=float), lower, upper)
    kw.setdefault("alpha", 0.2)
    kw.setdefault("linewidth", 0)
    return ax.fill_between(x, lo, hi, **kw)


def tile(images, cols: int, pad: int = 1, value: float = 1.0) -> np.ndarray:
    """Images [N, H, W] or [N, 1, H, W] (values in [0, 1]) -> one [rows*(H+pad)-pad, cols*(W+pad)-pad]
    picture, row by row, with `pad` pixels of `value` between samples; a short last row is blank."""
    imgs = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images, dtype=float)
    if imgs.ndim == 4:
        if imgs.shape[1] != 1:
            raise FigureStyleError(f"tile: images of shape {imgs.shape}: one channel expected")
        imgs = imgs[:, 0]
    if imgs.ndim != 3 or len(imgs) == 0:
        raise FigureStyleError(f"tile: images of shape {imgs.shape}: [N, H, W] with N >= 1 expected")
    if cols < 1:
        raise FigureStyleError(f"tile: cols={cols!r}, at least 1")
    n, h, w = imgs.shape
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad), float(value))
    for k in range(n):
        r, c = divmod(k, cols)
        out[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = imgs[k]
    return out


def sample_grid(ax, images, cols: int, title: str | None = None, **kw) -> AxesImage:
    """Show samples as a grid on `ax` (grey, [0, 1]) and mark the image so `measure` reports the
    displayed size of one sample."""
    n = len(images)
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    kw.setdefault("cmap", "gray")
    kw.setdefault("vmin", 0.0)
    kw.setdefault("vmax", 1.0)
    im = ax.imshow(tile(images, cols), interpolation="nearest", **kw)
    im.set_gid(f"{TILES_GID}{rows}x{cols}")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    if title:
        ax.set_title(title)
    return im


def measure(fig) -> dict:
    """What the style promises, measured on the laid-out figure: natural size in px, dpi, the
    smallest visible text in points, the smallest sample tile in px (0 when none), and how far (px)
    anything drawn runs past the figure's edge."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and _shown(t)]
    sizes = [t.get_fontsize() for t in texts]
    w, h = fig.canvas.get_width_height()
    drawn = fig.get_tightbbox(renderer)       # inches: everything drawn, legends and labels included
    overflow = max(0.0, -drawn.x0 * fig.dpi, -drawn.y0 * fig.dpi, drawn.x1 * fig.dpi - w, drawn.y1 * fig.dpi - h)
    tiles = []
    for im in fig.findobj(AxesImage):
        gid = im.get_gid() or ""
        if gid.startswith(TILES_GID) and im.get_visible():
            rows, cols = (int(v) for v in gid[len(TILES_GID):].split("x"))
            box = im.get_window_extent(renderer)
            tiles.append(min(box.width / cols, box.height / rows))
    return {"width_px": int(w), "height_px": int(h), "dpi": float(fig.dpi),
            "min_font_pt": float(min(sizes)) if sizes else 0.0,
            "min_tile_px": float(min(tiles)) if tiles else 0.0, "cut_px": round(float(overflow), 1)}


def _shown(text: Text) -> bool:
    """A text artist a reader sees: visible, in visible axes (tick labels of an axes turned off excepted)."""
    ax = text.axes
    if ax is None:
        return True
    if not ax.get_visible():
        return False
    ticks = [*ax.get_xticklabels(), *ax.get_yticklabels()]
    return ax.axison or not any(text is t for t in ticks)


def displayed(facts: dict) -> dict:
    """Displayed sizes in the narrow column: (text px, tile px, scale) from `measure`'s facts."""
    scale = min(1.0, NARROW_COLUMN_PX / facts["width_px"])
    return {"scale": scale,
            "text_px": facts["min_font_pt"] * facts["dpi"] / 72 * scale,
            "tile_px": facts["min_tile_px"] * scale}


def problems(facts: dict, name: str = "figure") -> list[str]:
    """The house-style rules `facts` (from `measure` or `read_png_facts`) break, [] when none."""
    out = []
    shown = displayed(facts)
    if facts["width_px"] > COLUMN_PX + 2:
        out.append(f"{name}: {facts['width_px']} px wide, wider than the column ({COLUMN_PX} px)")
    if facts["min_font_pt"] and shown["text_px"] < MIN_TEXT_PX:
        out.append(f"{name}: smallest text {facts['min_font_pt']:g} pt is {shown['text_px']:.1f} px as displayed "
                   f"(< {MIN_TEXT_PX:g} px)")
    if facts["cut_px"] > 1:
        out.append(f"{name}: drawn content runs {facts['cut_px']:g} px past the figure's edge (cut off)")
    if facts["min_tile_px"] and shown["tile_px"] < MIN_TILE_PX:
        out.append(f"{name}: one sample image is {shown['tile_px']:.0f} px as displayed (< {MIN_TILE_PX:g} px)")
    return out


# The facts travel inside the PNG as tEXt chunks (savefig's `metadata`), so the committed file is
# its own record.
FACT_KEYS = ("min_font_pt", "min_tile_px", "cut_px")


def png_metadata(facts: dict) -> dict:
    """savefig `metadata` for a PNG carrying `facts`; "Software" left out so bytes depend on pixels."""
    return {"Software": None, **{f"kexue:{k}": f"{facts[k]:.4g}" for k in FACT_KEYS}}


def read_png_facts(path: Path) -> dict:
    """Size (IHDR), dpi (pHYs) and the house-style facts (tEXt) of a PNG file, read from its chunks."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise FigureStyleError(f"{path}: not a PNG file")
    facts, pos, text = {}, 8, {}
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            facts["width_px"], facts["height_px"] = struct.unpack(">II", body[:8])
        elif kind == b"pHYs":
            per_m, _, unit = struct.unpack(">IIB", body)
            facts["dpi"] = per_m * 0.0254 if unit == 1 else float("nan")
        elif kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            text[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            text[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
        pos += 12 + length
    missing = [k for k in FACT_KEYS if f"kexue:{k}" not in text]
    if missing or "dpi" not in facts:
        raise FigureStyleError(f"{path}: no house-style record ({', '.join(missing) or 'dpi'} missing): "
                               "saved without kexue.report.Report.figure?")
    for k in FACT_KEYS:
        facts[k] = float(text[f"kexue:{k}"])
    return facts
