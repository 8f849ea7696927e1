"""Find surface defects in an STM topography image (image analysis only, no ground truth).

The demo scans the surface through the Nanonis protocol and hands the Z images here. Nothing in
this module knows where the simulator put its defects; :mod:`atomlab.lab.matching` compares the
result with the seeded surface afterwards.

The method (docs/demo.md, "Detection"):

1. average the forward and backward traces, which cancels the feedback loop's lag (a bump
   appears shifted along the fast axis by the same amount, in opposite directions);
2. estimate the background (terraces, step edges) with a median filter a few nanometres wide,
   three times, each time ignoring the pixels the previous pass flagged as features, so a broad
   cluster does not lift its own background;
3. flag pixels further from the background than a threshold set from the image's own noise
   (a robust sigma from the median absolute deviation) and group them into connected blobs;
4. locate each blob at its extremum, refined to a fraction of a pixel with a parabola; a bump
   lying on a step edge (and stretched along it) is a step-edge defect and is placed on the edge
   line found from the background's gradient;
5. name its kind (pit: vacancy; narrow bump: adatom; broad bump: contamination) and estimate a
   severity 1-10 from its height and width.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from atomlab.core.errors import InvalidInputError, UnavailableError

PM = 1e-12
NM = 1e-9

BACKGROUND_WINDOW_NM = 8.0
"""Median-filter width for the slow 2-D background: several times a defect's size."""
BACKGROUND_PASSES = 3
PROFILE_PERCENTILE = 30.0
PROFILE_MIN_FRACTION = 0.35
COARSE_WINDOW_PX = 9
"""The slow background's median runs on a grid coarse enough to make its window this wide."""
MASK_GROW_NM = 0.4
"""Flagged features are grown by this much before the next background pass ignores them."""
NOISE_SIGMAS = 6.0
MIN_BUMP_M = 25 * PM
MIN_PIT_M = 20 * PM
MIN_AREA_NM2 = 0.08
"""Smaller blobs are noise or corrugation: a vacancy of severity 1 covers about 0.3 nm²."""
STEP_GRADIENT = 0.02
"""A background slope (m/m) above this marks a step edge (a 0.2 nm step rises over ~0.3 nm)."""
STEP_SNAP_NM = 0.6
"""A bump whose peak is this close to a step edge, and stretched along it, sits on the edge."""
MIN_STEP_M = 80 * PM
"""A terrace edge rises at least this much (a monatomic step is 200 pm)."""
EDGE_MARGIN_PX = 3
"""Features and edges this close to the frame's sides are where the scan turns: not trusted."""
MIN_PIT_SIGMA_NM = 0.17
"""A vacancy is about an atom site wide: measured sigma 0.21-0.4 nm; narrower pits are noise."""
NEAR_STEP_PIT_M = 35 * PM
"""Beside a step edge flattening leaves dips of up to about 30 pm: a pit there must be deeper."""
MIN_BUMP_SIGMA_NM = 0.2
"""An adatom's measured sigma is 0.29 nm or more; a narrower bump is a glitch of the scan."""
MAX_VACANCY_SIGMA_NM = 0.45
"""A pit stretched along a step edge and wider than any vacancy is the edge's residue."""
STEP_ELONGATION = 1.2
"""...and its half-height extent along the edge is at least this many times its width."""
STEP_PIT_NM = 0.1
"""A pit this close to a step edge is what flattening leaves of the edge, not a vacancy."""
DUPLICATE_NM = 1.0
"""On a periodic surface, two detections this close (across the period) are one defect..."""
DUPLICATE_CUT_NM = 2.5
"""...or this close when one of them is cut by the frame's edge (its position is then off)."""
MIN_SEPARATION_NM = 0.6
"""Peaks closer than this are one feature, whatever lies between them."""
PEAK_WINDOW_PX = 5
PEAK_PROMINENCE = 0.25
STEP_PROMINENCE = 0.1
"""A lower peak is a feature of its own when the height between it and a higher one dips by at
least this fraction of its own height (along a step edge, ``STEP_PROMINENCE``)."""
FOOTPRINT_LEVEL = 0.2
"""A cluster is placed at the centre of its footprint above this fraction of its height: its
lobes shift the peak, the broad main mound dominates the skirt."""
CONTAMINATION_SIGMA_NM = 0.43
"""Bumps wider than this (Gaussian sigma from the area above half height) are clusters."""


@dataclass(frozen=True)
class ScanImage:
    """One scan of one channel: images (rows top to bottom) and where the frame lies.

    ``frame_*`` are the scan frame in the instrument's piezo coordinates (nm);
    ``origin_nm`` is where piezo (0, 0) lies in the surface frame (the simulator puts it over
    the surface's centre), so ``surface = piezo + origin``.
    """

    forward: NDArray[np.float64]
    backward: NDArray[np.float64] | None
    frame_center_nm: tuple[float, float]
    frame_size_nm: tuple[float, float]
    origin_nm: tuple[float, float] = (0.0, 0.0)
    channel: str = "Z (m)"

    def __post_init__(self) -> None:
        if self.forward.ndim != 2 or min(self.forward.shape) < 8:
            raise InvalidInputError(
                f"a scan image must be 2-D and at least 8 x 8 pixels, got {self.forward.shape}",
                field="image",
            )
        if self.backward is not None and self.backward.shape != self.forward.shape:
            raise InvalidInputError(
                "forward and backward images differ in shape "
                f"({self.forward.shape} vs {self.backward.shape})",
                field="image",
            )

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self.forward.shape
        return int(rows), int(cols)

    @property
    def pixel_nm(self) -> tuple[float, float]:
        """Pixel size along x (columns) and y (rows)."""
        rows, cols = self.shape
        return self.frame_size_nm[0] / cols, self.frame_size_nm[1] / rows

    def surface_xy(self, row: float, col: float) -> tuple[float, float]:
        """Surface coordinates (nm) of a (fractional) pixel position; row 0 is the top."""
        rows, cols = self.shape
        width, height = self.frame_size_nm
        cx, cy = self.frame_center_nm
        x = cx - width / 2 + (col + 0.5) * width / cols
        y = cy + height / 2 - (row + 0.5) * height / rows
        return x + self.origin_nm[0], y + self.origin_nm[1]

    def save(self, path: Path) -> Path:
        """Both traces and the frame as a NumPy ``.npz`` (``ScanImage.load`` reads it back)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        backward = (
            self.backward if self.backward is not None else np.full_like(self.forward, np.nan)
        )
        with path.open("wb") as handle:
            np.savez_compressed(
                handle,
                forward=self.forward,
                backward=backward,
                frame_center_nm=np.array(self.frame_center_nm),
                frame_size_nm=np.array(self.frame_size_nm),
                origin_nm=np.array(self.origin_nm),
                channel=np.array(self.channel),
            )
        return path

    @classmethod
    def load(cls, path: Path) -> ScanImage:
        with np.load(path) as data:
            backward = np.asarray(data["backward"], dtype=np.float64)
            return cls(
                forward=np.asarray(data["forward"], dtype=np.float64),
                backward=None if np.isnan(backward).all() else backward,
                frame_center_nm=_pair(data["frame_center_nm"]),
                frame_size_nm=_pair(data["frame_size_nm"]),
                origin_nm=_pair(data["origin_nm"]),
                channel=str(data["channel"]),
            )

    def combined(self) -> NDArray[np.float64]:
        """Forward and backward averaged where both were scanned (else the forward trace)."""
        fwd = np.asarray(self.forward, dtype=np.float64)
        if self.backward is None:
            return fwd
        bwd = np.asarray(self.backward, dtype=np.float64)
        both = np.isfinite(fwd) & np.isfinite(bwd)
        return np.where(both, (fwd + bwd) / 2.0, np.where(np.isfinite(fwd), fwd, bwd))


@dataclass(frozen=True)
class Detection:
    """One defect found in an image, in the surface frame (nm)."""

    id: str
    x_nm: float
    y_nm: float
    kind: str
    severity: int
    height_pm: float
    """Signed: positive for a bump, negative for a pit."""
    sigma_nm: float
    area_nm2: float
    on_step: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class DetectionResult:
    """What :func:`detect_defects` found, with the numbers it used to decide."""

    detections: list[Detection]
    noise_pm: float
    threshold_bump_pm: float
    threshold_pit_pm: float
    step_edges_nm: list[float] = field(default_factory=list)
    """x of step edges running along y (nm, surface frame), as found in the background."""
    candidates: int = 0
    """Blobs above the thresholds, before the area and bounds filters."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "detections": [d.to_dict() for d in self.detections],
            "noise_pm": round(self.noise_pm, 3),
            "threshold_bump_pm": round(self.threshold_bump_pm, 3),
            "threshold_pit_pm": round(self.threshold_pit_pm, 3),
            "step_edges_nm": [round(x, 3) for x in self.step_edges_nm],
            "candidates": self.candidates,
        }


def detect_defects(
    image: ScanImage,
    *,
    keep_within_nm: tuple[float, float] | None = None,
    period_nm: tuple[float, float] | None = None,
    id_prefix: str = "det",
) -> DetectionResult:
    """Find defects in ``image``'s topography.

    ``keep_within_nm = (W, H)`` keeps only detections inside ``[0, W) x [0, H)`` of the
    surface frame. ``period_nm = (W, H)`` says the surface repeats with that period (the
    simulated one does): positions are wrapped into ``[0, W) x [0, H)`` and a defect seen twice
    (a frame reaching beyond the surface's edges shows the opposite edge again) is reported
    once, from the copy farthest from the frame's edges.
    """
    ndi = _ndimage()
    z = image.combined()
    finite = np.isfinite(z)
    if finite.sum() < 0.9 * z.size:
        raise InvalidInputError(
            f"the scan image is incomplete ({int(finite.sum())} of {z.size} pixels scanned); "
            "wait for the scan to finish before detecting",
            field="image",
        )
    z = np.where(finite, z, np.nanmedian(z))
    px_x, px_y = image.pixel_nm
    px = (px_x + px_y) / 2
    window = _odd(BACKGROUND_WINDOW_NM / px)
    grow = max(1, round(MASK_GROW_NM / px))

    # Terraces: step edges run along the slow axis, so the median of each column is the
    # terrace profile along x, steps and all. Each pass leaves out the pixels the previous one
    # flagged as features, so a broad cluster lifts neither its column nor its surroundings.
    # The first pass flags everything (so every column takes its low percentile).
    flagged = np.ones(z.shape, dtype=bool)
    slow = np.zeros_like(z)
    residual = z - np.median(z, axis=0)[None, :]
    noise = _robust_sigma(residual)
    for _ in range(BACKGROUND_PASSES):
        profile = _column_profile(z, flagged)
        flat = z - profile[None, :]
        # Whatever else varies slowly in 2-D (a tilt along y, a bowed scan): a wide median.
        slow = _smooth_median(ndi, np.where(flagged, slow, flat), window)
        residual = flat - slow
        noise = _robust_sigma(np.where(flagged, np.nan, residual))
        flagged = np.abs(residual) > max(3.0 * noise, MIN_PIT_M / 2)
        flagged = ndi.binary_dilation(flagged, iterations=grow)

    bump_threshold = max(NOISE_SIGMAS * noise, MIN_BUMP_M)
    pit_threshold = max(NOISE_SIGMAS * noise, MIN_PIT_M)
    steps = _step_edges(ndi, profile, px_x)
    step_cols = [c for c, _ in steps]
    step_xs = [image.surface_xy(0, c)[0] for c in step_cols]

    found: list[tuple[Detection, bool, float]] = []  # with: cut by the frame's edge, inset (px)
    candidates = 0
    separation_px = max(3, round(MIN_SEPARATION_NM / px))
    for sign, threshold in ((1.0, bump_threshold), (-1.0, pit_threshold)):
        signed = sign * residual
        near_step = _near_columns(step_cols, round(STEP_SNAP_NM / px_x), image.shape[1])
        for part in _blobs(ndi, signed, threshold, separation_px, near_step):
            candidates += 1
            blob = _measure(ndi, signed, part, px_x, px_y)
            if blob is None:
                continue
            rows, cols = image.shape
            inset = min(blob.row, blob.col, rows - 1 - blob.row, cols - 1 - blob.col)
            if inset < EDGE_MARGIN_PX:
                continue  # cut by the frame's edge: not seen whole (the margin shows it whole)
            if blob.sigma_nm < (MIN_PIT_SIGMA_NM if sign < 0 else MIN_BUMP_SIGMA_NM):
                continue  # narrower than one atom site: noise or the edge of a step
            x, y = image.surface_xy(blob.row, blob.col)
            nearest_step = min(step_cols, key=lambda c: abs(blob.col - c)) if step_cols else None
            step_gap_nm = abs(blob.col - nearest_step) * px_x if nearest_step is not None else None
            along_step = (
                step_gap_nm is not None
                and step_gap_nm <= STEP_SNAP_NM
                and blob.sigma_y_nm > STEP_ELONGATION * blob.sigma_x_nm
            )
            gap = step_gap_nm if step_gap_nm is not None else math.inf
            if sign < 0 and (
                (along_step and blob.sigma_nm > MAX_VACANCY_SIGMA_NM)
                or gap <= STEP_PIT_NM
                or (gap <= STEP_SNAP_NM and blob.peak < NEAR_STEP_PIT_M)
            ):
                continue  # what is left of a step edge after flattening, not a vacancy
            on_step = sign > 0 and along_step
            sigma_nm = blob.sigma_nm
            kind = _kind(sign, on_step, sigma_nm)
            if on_step and nearest_step is not None:
                x = image.surface_xy(blob.row, nearest_step)[0]
            elif kind == "contamination":
                x, y = image.surface_xy(blob.footprint_row, blob.footprint_col)
            height_m = sign * blob.peak
            found.append(
                (
                    Detection(
                        id="",
                        x_nm=float(x),
                        y_nm=float(y),
                        kind=kind,
                        severity=_severity(kind, abs(height_m), sigma_nm),
                        height_pm=float(height_m / PM),
                        sigma_nm=float(sigma_nm),
                        area_nm2=float(blob.area_nm2),
                        on_step=bool(on_step),
                    ),
                    blob.cut,
                    float(inset),
                )
            )

    if period_nm is not None:
        found = _fold(found, period_nm)
    kept = []
    for d in sorted((d for d, _, _ in found), key=lambda d: (-d.y_nm, d.x_nm)):  # reading order
        if keep_within_nm is not None:
            width, height = keep_within_nm
            if not (0.0 <= d.x_nm < width and 0.0 <= d.y_nm < height):
                continue
        kept.append(d)
    numbered = [_with_id(d, f"{id_prefix}-{k:02d}") for k, d in enumerate(kept, start=1)]
    return DetectionResult(
        detections=numbered,
        noise_pm=noise / PM,
        threshold_bump_pm=bump_threshold / PM,
        threshold_pit_pm=pit_threshold / PM,
        step_edges_nm=step_xs,
        candidates=candidates,
    )


def _fold(
    found: list[tuple[Detection, bool, float]], period_nm: tuple[float, float]
) -> list[tuple[Detection, bool, float]]:
    """Wrap positions into one period; of copies of one defect keep the best imaged (whole
    rather than cut by the frame's edge, then farthest from the edge)."""
    width, height = period_nm
    kept: list[tuple[Detection, bool, float]] = []
    for d, cut, inset in sorted(found, key=lambda item: (item[1], -item[2])):
        wrapped = Detection(**{**asdict(d), "x_nm": d.x_nm % width, "y_nm": d.y_nm % height})
        if any(
            (k.height_pm > 0) == (d.height_pm > 0)
            and _periodic_gap(k, wrapped, width, height)
            <= (DUPLICATE_CUT_NM if cut or k_cut else DUPLICATE_NM)
            for k, k_cut, _ in kept
        ):
            continue
        kept.append((wrapped, cut, inset))
    return kept


def _periodic_gap(a: Detection, b: Detection, width: float, height: float) -> float:
    dx = (a.x_nm - b.x_nm + width / 2) % width - width / 2
    dy = (a.y_nm - b.y_nm + height / 2) % height - height / 2
    return math.hypot(dx, dy)


def _pair(values: NDArray[Any]) -> tuple[float, float]:
    return float(values[0]), float(values[1])


def _with_id(d: Detection, ident: str) -> Detection:
    return Detection(**{**asdict(d), "id": ident})


def _ndimage() -> Any:
    try:
        import scipy.ndimage as ndi
    except ImportError as exc:  # pragma: no cover - scipy ships with the swarm extra
        raise UnavailableError(
            "defect detection needs SciPy: install the swarm extra (uv sync --extra swarm)",
            package="scipy",
        ) from exc
    return ndi


def _odd(pixels: float) -> int:
    n = max(3, round(pixels))
    return n if n % 2 else n + 1


def _smooth_median(ndi: Any, image: NDArray[np.float64], window: int) -> NDArray[np.float64]:
    """A ``window``-wide median filter of a slowly varying image, computed on a coarser grid (a
    wide median at full resolution costs seconds; the result is smooth anyway)."""
    factor = max(1, window // COARSE_WINDOW_PX)
    if factor == 1:
        result: NDArray[np.float64] = ndi.median_filter(image, size=window, mode="nearest")
        return result
    rows, cols = image.shape
    pad_r, pad_c = (-rows) % factor, (-cols) % factor
    padded = np.pad(image, ((0, pad_r), (0, pad_c)), mode="edge")
    coarse = padded.reshape(padded.shape[0] // factor, factor, -1, factor).mean(axis=(1, 3))
    filtered = ndi.median_filter(coarse, size=_odd(window / factor), mode="nearest")
    fine = ndi.zoom(filtered, factor, order=1, mode="nearest", grid_mode=True)
    return np.asarray(fine[:rows, :cols], dtype=np.float64)


def _column_profile(z: NDArray[np.float64], flagged: NDArray[np.bool_]) -> NDArray[np.float64]:
    """The terrace height of each column: the median of its unflagged pixels, or, where features
    cover most of the column (a step edge with kinks along it), a low percentile of all of them
    (bumps are the common feature; pits are small)."""
    rows = z.shape[0]
    keep = ~flagged
    counts = keep.sum(axis=0)
    low = np.percentile(z, PROFILE_PERCENTILE, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-flagged columns: handled below
        median = np.nanmedian(np.where(keep, z, np.nan), axis=0)
    enough = counts >= PROFILE_MIN_FRACTION * rows
    return np.asarray(np.where(enough, median, low), dtype=np.float64)


def _robust_sigma(values: NDArray[np.float64]) -> float:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


@dataclass(frozen=True)
class _Blob:
    row: float
    """Peak position (fractional pixel)."""
    col: float
    footprint_row: float
    """Centre of the footprint (the pixels above a fifth of the peak), unweighted."""
    footprint_col: float
    peak: float
    sigma_x_nm: float
    sigma_y_nm: float
    sigma_nm: float
    area_nm2: float
    cut: bool
    """The region reaches the frame's edge: the feature is not seen whole."""


def _near_columns(centres: Sequence[float], reach: int, columns: int) -> NDArray[np.bool_]:
    """True for the columns within ``reach`` of any of ``centres``."""
    near = np.zeros(columns, dtype=bool)
    for centre in centres:
        lo, hi = max(0, round(centre) - reach), min(columns, round(centre) + reach + 1)
        near[lo:hi] = True
    return near


def _blobs(
    ndi: Any,
    signed: NDArray[np.float64],
    threshold: float,
    min_distance_px: int,
    near_step: NDArray[np.bool_],
) -> list[NDArray[np.bool_]]:
    """Connected regions above ``threshold``, each split between its separate peaks (two
    defects whose skirts touch): a peak is separate when the height dips between it and every
    higher peak of the region."""
    labels, count = ndi.label(signed > threshold, structure=np.ones((3, 3)))
    if count == 0:
        return []
    peaks = (signed == ndi.maximum_filter(signed, size=PEAK_WINDOW_PX)) & (labels > 0)
    parts: list[NDArray[np.bool_]] = []
    grid = np.indices(signed.shape)
    for index, region in enumerate(ndi.find_objects(labels), start=1):
        if region is None:
            continue
        inside = labels == index
        maxima = _separate_peaks(
            np.argwhere(peaks & inside), signed, threshold, min_distance_px, near_step
        )
        if len(maxima) <= 1:
            parts.append(inside)
            continue
        # Each pixel goes to its nearest peak.
        r, c = grid[0][region], grid[1][region]
        distances = np.stack([(r - mr) ** 2 + (c - mc) ** 2 for mr, mc in maxima])
        owner = np.argmin(distances, axis=0)
        for k in range(len(maxima)):
            part = np.zeros_like(inside)
            part[region] = inside[region] & (owner == k)
            parts.append(part)
    return parts


def _separate_peaks(
    maxima: NDArray[np.intp],
    signed: NDArray[np.float64],
    threshold: float,
    min_distance_px: int,
    near_step: NDArray[np.bool_],
) -> list[tuple[int, int]]:
    """The highest peak first; a lower one is kept when it is at least ``min_distance_px`` from
    every kept peak and the height dips by a fair part of its own between them: the lobes of one
    cluster and noise on a flat top dip little. Kinks along a step edge are smooth elongated
    bumps, so a smaller dip separates two of them."""
    ordered = sorted(
        ((int(r), int(c)) for r, c in maxima), key=lambda rc: -float(signed[rc[0], rc[1]])
    )
    kept: list[tuple[int, int]] = []
    for r, c in ordered:
        value = float(signed[r, c])
        if all(
            _dips_between(signed, (kr, kc), (r, c), value, threshold, near_step, min_distance_px)
            for kr, kc in kept
        ):
            kept.append((r, c))
    return kept


def _dips_between(
    signed: NDArray[np.float64],
    high: tuple[int, int],
    low: tuple[int, int],
    value: float,
    threshold: float,
    near_step: NDArray[np.bool_],
    min_distance_px: int,
) -> bool:
    """Is the peak at ``low`` (height ``value``) a feature apart from the one at ``high``?"""
    if (low[0] - high[0]) ** 2 + (low[1] - high[1]) ** 2 < min_distance_px**2:
        return False
    on_step = bool(near_step[low[1]] and near_step[high[1]])
    dip = max((STEP_PROMINENCE if on_step else PEAK_PROMINENCE) * value, threshold)
    return _lowest_between(signed, high, low) < value - dip


def _lowest_between(signed: NDArray[np.float64], a: tuple[int, int], b: tuple[int, int]) -> float:
    """The lowest value on the straight line from pixel ``a`` to pixel ``b``."""
    steps = max(abs(a[0] - b[0]), abs(a[1] - b[1])) + 1
    rows = np.rint(np.linspace(a[0], b[0], steps)).astype(int)
    cols = np.rint(np.linspace(a[1], b[1], steps)).astype(int)
    return float(signed[rows, cols].min())


def _measure(
    ndi: Any,
    signed: NDArray[np.float64],
    inside: NDArray[np.bool_],
    px_x: float,
    px_y: float,
) -> _Blob | None:
    area_nm2 = float(inside.sum()) * px_x * px_y
    if area_nm2 < MIN_AREA_NM2:
        return None
    values = np.where(inside, signed, -np.inf)
    r0, c0 = np.unravel_index(int(np.argmax(values)), values.shape)
    row, col = int(r0), int(c0)
    peak = float(signed[row, col])
    rows, cols = signed.shape
    dr = _parabola(signed, (row - 1, col), (row, col), (row + 1, col)) if 0 < row < rows - 1 else 0
    dc = _parabola(signed, (row, col - 1), (row, col), (row, col + 1)) if 0 < col < cols - 1 else 0
    footprint = inside & (signed >= FOOTPRINT_LEVEL * peak)
    frow, fcol = ndi.center_of_mass(footprint)
    # Size from the pixels above half height: a Gaussian's half-height width is 2.355 sigma.
    rr, cc = np.nonzero(inside & (signed >= peak / 2))
    extent_x = (cc.max() - cc.min() + 1) * px_x
    extent_y = (rr.max() - rr.min() + 1) * px_y
    return _Blob(
        row=row + dr,
        col=col + dc,
        footprint_row=float(frow),
        footprint_col=float(fcol),
        peak=peak,
        sigma_x_nm=extent_x / 2.355,
        sigma_y_nm=extent_y / 2.355,
        # A Gaussian's half-height disc has radius 1.1774 sigma; its area is less coarse than
        # its extent in whole pixels.
        sigma_nm=math.sqrt(rr.size * px_x * px_y / math.pi) / 1.1774,
        cut=_touches_edge(inside, EDGE_MARGIN_PX),
        area_nm2=area_nm2,
    )


def _touches_edge(inside: NDArray[np.bool_], margin: int) -> bool:
    return bool(
        inside[:margin].any()
        or inside[-margin:].any()
        or inside[:, :margin].any()
        or inside[:, -margin:].any()
    )


def _parabola(
    a: NDArray[np.float64], left: tuple[int, int], mid: tuple[int, int], right: tuple[int, int]
) -> float:
    """Sub-pixel offset of the extremum of a parabola through three samples (within ±0.5)."""
    lo, mi, hi = float(a[left]), float(a[mid]), float(a[right])
    denominator = lo - 2 * mi + hi
    if denominator >= 0:  # not a maximum
        return 0.0
    return float(np.clip(0.5 * (lo - hi) / denominator, -0.5, 0.5))


def _step_edges(
    ndi: Any, profile: NDArray[np.float64], px_x_nm: float
) -> list[tuple[float, float]]:
    """Step edges running along y: (fractional column, rise in m) of each, left to right.

    An edge is a run of columns where the terrace profile is steep; it is placed where the
    profile crosses half-way between the terrace levels on either side (interpolated), which
    the feedback loop's rounding of the edge does not move.
    """
    slope = np.gradient(profile, px_x_nm * NM)
    labels, count = ndi.label(np.abs(slope) > STEP_GRADIENT)
    edges: list[tuple[float, float]] = []
    last = profile.size - 1
    for index in range(1, count + 1):
        cols = np.nonzero(labels == index)[0]
        left, right = max(int(cols[0]) - 2, 0), min(int(cols[-1]) + 2, last)
        low, high = float(profile[left]), float(profile[right])
        middle = (low + high) / 2
        centre = float(np.sum(cols * np.abs(slope[cols])) / np.sum(np.abs(slope[cols])))
        for c in range(left, right):
            a, b = float(profile[c]), float(profile[c + 1])
            if (a - middle) * (b - middle) <= 0 and a != b:
                centre = c + (middle - a) / (b - a)
                break
        if abs(high - low) >= MIN_STEP_M and EDGE_MARGIN_PX <= centre <= last - EDGE_MARGIN_PX:
            edges.append((centre, high - low))
    return edges


def _kind(sign: float, on_step: bool, sigma_nm: float) -> str:
    if sign < 0:
        return "vacancy"
    if on_step:
        return "step_edge"
    return "contamination" if sigma_nm > CONTAMINATION_SIGMA_NM else "adatom"


# Apparent height (pm) of a defect of severity 1 and the rise per severity step, per kind, as
# this module measures them in the demo's imaging conditions (0.5 V, 50 pA, 600 nm/s at 10 kHz,
# about 0.16 nm pixels; fitted on real scans of the simulator, see docs/demo.md). Other conditions
# shift them: the estimate orders defects for triage and repair, and its error is reported.
_SEVERITY_SCALE: dict[str, tuple[float, float]] = {
    "vacancy": (34.0, 5.9),
    "adatom": (80.0, 10.75),
    "contamination": (210.0, 68.0),
    "step_edge": (59.0, 5.7),
}


def _severity(kind: str, height_m: float, sigma_nm: float) -> int:
    base, per_step = _SEVERITY_SCALE[kind]
    estimate = 1 + (height_m / PM - base) / per_step
    return int(min(10, max(1, round(estimate))))


def pixel_positions(detections: Sequence[Detection], image: ScanImage) -> list[tuple[float, float]]:
    """Where each detection lies in the image, as (x, y) in the frame's piezo nm (for figures)."""
    return [(d.x_nm - image.origin_nm[0], d.y_nm - image.origin_nm[1]) for d in detections]
