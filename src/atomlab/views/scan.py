"""The scan image as a heat map in nanometres (what an SPM user looks at first)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from atomlab.views.figure import Figure, axis, base_layout, empty_figure

SCAN_UIREVISION = "scan"
MAX_SIDE_PX = 512
"""Images larger than this on a side are shown binned (mean of blocks): a browser gains nothing
from more pixels than the panel has, and a 4096² frame would be 300 MB of JSON."""
COLORSCALE = "Viridis"
SCAN_HEIGHT_PX = 520


def scan_heatmap(
    image: Any,
    *,
    width_nm: float,
    height_nm: float,
    title: str | None = None,
    unit: str = "",
    center_nm: tuple[float, float] = (0.0, 0.0),
) -> Figure:
    """A scan image (rows top to bottom, as the controller returns it) as a heat map in nm.

    Unscanned pixels (NaN) stay blank. The axes keep the frame's aspect ratio, so a 20 × 10 nm
    frame looks twice as wide as it is tall.
    """
    data = np.asarray(image, dtype=float)
    if data.ndim != 2 or data.size == 0:
        return empty_figure("no scan image yet", title=title, uirevision=SCAN_UIREVISION)
    data = _binned(data, MAX_SIDE_PX)
    rows, cols = data.shape
    cx, cy = center_nm
    x = [cx - width_nm / 2 + (j + 0.5) * width_nm / cols for j in range(cols)]
    # Row 0 is the top of the frame: the largest y.
    y = [cy + height_nm / 2 - (i + 0.5) * height_nm / rows for i in range(rows)]
    z = [[v if math.isfinite(v) else None for v in row] for row in data.tolist()]
    layout = base_layout(title, uirevision=SCAN_UIREVISION, height=SCAN_HEIGHT_PX)
    layout["xaxis"] = axis("x (nm)", constrain="domain")
    layout["yaxis"] = axis("y (nm)", scaleanchor="x", scaleratio=1, constrain="domain")
    trace = {
        "type": "heatmap",
        "x": x,
        "y": y,
        "z": z,
        "colorscale": COLORSCALE,
        "colorbar": {"title": {"text": unit}} if unit else {},
        "hovertemplate": "x %{x:.2f} nm, y %{y:.2f} nm<br>%{z:.4g}"
        + (f" {unit}" if unit else "")
        + "<extra></extra>",
    }
    return {"data": [trace], "layout": layout}


def _binned(data: np.ndarray[Any, Any], max_side: int) -> np.ndarray[Any, Any]:
    """Average ``k × k`` blocks so neither side exceeds ``max_side`` (NaN-aware)."""
    k = max(1, -(-max(data.shape) // max_side))
    if k == 1:
        return data
    rows, cols = data.shape[0] // k * k, data.shape[1] // k * k
    blocks = data[:rows, :cols].reshape(rows // k, k, cols // k, k)
    finite = np.isfinite(blocks)
    counts = finite.sum(axis=(1, 3))
    sums = np.where(finite, blocks, 0.0).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        out: np.ndarray[Any, Any] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return out
