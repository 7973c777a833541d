"""Number formatting shared by the verdict rules, the reports and the front page.

Kept apart so that `kexue.verdicts` and `kexue.report` need not import each other.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd


def fmt(x, sig: int = 3) -> str:
    """A number with `sig` significant figures, readable: 0.000123 -> '1.23e-04', 1234.5 -> '1.23e+03'
    only past 1e5; integers stay integers; NaN -> 'n/a'."""
    if x is None:
        return "n/a"
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}" if abs(int(x)) >= 10_000 else str(int(x))
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(x):
        return "n/a" if math.isnan(x) else ("∞" if x > 0 else "−∞")
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    if mag >= 5 or mag < -3:
        return f"{x:.{sig - 1}e}"
    decimals = max(sig - 1 - mag, 0)
    return f"{x:,.{decimals}f}" if mag >= 4 else f"{x:.{decimals}f}"


def format_table(df: pd.DataFrame, sig: int = 3) -> pd.DataFrame:
    """Every float cell as `fmt(x, sig)`; other cells as they are. For display, never for CSV."""
    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]) or pd.api.types.is_integer_dtype(out[col]):
            out[col] = [fmt(v, sig) for v in out[col]]
    return out


def mean_std(values, digits: int = 2, scale: float = 1.0) -> str:
    """'mean ± std' (sample std, ddof=1) of `values` times `scale`."""
    v = np.asarray(values, dtype=float) * scale
    sd = v.std(ddof=1) if len(v) > 1 else float("nan")
    return f"{v.mean():.{digits}f} ± {sd:.{digits}f}"
