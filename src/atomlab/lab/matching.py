"""Score detections against the seeded surface: one-to-one matches within a stated tolerance.

Used only after detection, to report precision and recall; nothing here feeds the detector.
Distances are periodic when a period is given (the simulated surface repeats).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MATCH_TOLERANCE_NM = 0.5
"""A detection and a true defect match when they are at most this far apart, one to one.

Defects are seeded at least 4 nm apart, so 0.5 nm can never pair a detection with the wrong
defect; it is the apparent centre of the broadest contamination clusters (about 2 nm across,
with lobes) that needs more than the 0.1 nm grid."""


@dataclass(frozen=True)
class Located:
    """A point to match: an id, a position in nm and a kind."""

    id: str
    x_nm: float
    y_nm: float
    kind: str = ""
    severity: int | None = None


@dataclass(frozen=True)
class MatchPair:
    detected: str
    truth: str
    distance_nm: float
    kind_detected: str
    kind_true: str
    severity_detected: int | None
    severity_true: int | None


@dataclass(frozen=True)
class MatchReport:
    """Precision, recall and the pairs behind them."""

    tolerance_nm: float
    pairs: list[MatchPair]
    false_positives: list[str]
    missed: list[str]
    detected_count: int
    truth_count: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def true_positives(self) -> int:
        return len(self.pairs)

    @property
    def precision(self) -> float:
        return self.true_positives / self.detected_count if self.detected_count else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.truth_count if self.truth_count else 1.0

    def to_dict(self) -> dict[str, Any]:
        distances = [p.distance_nm for p in self.pairs]
        kinds_right = sum(p.kind_detected == p.kind_true for p in self.pairs)
        severities = [
            abs(p.severity_detected - p.severity_true)
            for p in self.pairs
            if p.severity_detected is not None and p.severity_true is not None
        ]
        return {
            "tolerance_nm": self.tolerance_nm,
            "detected": self.detected_count,
            "true_defects": self.truth_count,
            "true_positives": self.true_positives,
            "false_positives": self.false_positives,
            "missed": self.missed,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "mean_error_nm": round(float(np.mean(distances)), 4) if distances else None,
            "max_error_nm": round(max(distances), 4) if distances else None,
            "kind_accuracy": round(kinds_right / len(self.pairs), 4) if self.pairs else None,
            "severity_mean_abs_error": (
                round(float(np.mean(severities)), 3) if severities else None
            ),
            "pairs": [
                {
                    "detected": p.detected,
                    "truth": p.truth,
                    "distance_nm": round(p.distance_nm, 4),
                    "kind_detected": p.kind_detected,
                    "kind_true": p.kind_true,
                    "severity_detected": p.severity_detected,
                    "severity_true": p.severity_true,
                }
                for p in self.pairs
            ],
            **self.extra,
        }


def distance_nm(
    a: tuple[float, float], b: tuple[float, float], period_nm: tuple[float, float] | None
) -> float:
    dx, dy = a[0] - b[0], a[1] - b[1]
    if period_nm is not None:
        w, h = period_nm
        dx = (dx + w / 2) % w - w / 2
        dy = (dy + h / 2) % h - h / 2
    return math.hypot(dx, dy)


def match(
    detected: Sequence[Located],
    truth: Sequence[Located],
    *,
    tolerance_nm: float = MATCH_TOLERANCE_NM,
    period_nm: tuple[float, float] | None = None,
) -> MatchReport:
    """Pair detections with true defects one to one, minimising the total distance (Hungarian
    method), and keep the pairs within ``tolerance_nm``."""
    pairs: list[MatchPair] = []
    used_d: set[int] = set()
    used_t: set[int] = set()
    if detected and truth:
        from scipy.optimize import linear_sum_assignment

        cost = np.array(
            [
                [distance_nm((d.x_nm, d.y_nm), (t.x_nm, t.y_nm), period_nm) for t in truth]
                for d in detected
            ]
        )
        big = 1e6
        rows, cols = linear_sum_assignment(np.where(cost <= tolerance_nm, cost, big))
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
            if cost[i, j] <= tolerance_nm:
                d, t = detected[i], truth[j]
                used_d.add(i)
                used_t.add(j)
                pairs.append(
                    MatchPair(
                        detected=d.id,
                        truth=t.id,
                        distance_nm=float(cost[i, j]),
                        kind_detected=d.kind,
                        kind_true=t.kind,
                        severity_detected=d.severity,
                        severity_true=t.severity,
                    )
                )
    pairs.sort(key=lambda p: p.detected)
    return MatchReport(
        tolerance_nm=tolerance_nm,
        pairs=pairs,
        false_positives=[d.id for i, d in enumerate(detected) if i not in used_d],
        missed=[t.id for j, t in enumerate(truth) if j not in used_t],
        detected_count=len(detected),
        truth_count=len(truth),
    )
