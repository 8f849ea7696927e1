"""Space-time reservations: each agent owns the swept segment of its current move until it
arrives, then only the point where it stands. A new move is allowed only if its segment keeps
the clearance (0.5 nm separation + a drift margin) from every other agent's reservation.

Because a reservation covers the whole segment for the whole time of the move, the guarantee
does not depend on agents keeping to a timetable: wherever each agent is along its own segment,
no two agents are closer than the clearance (prioritised planning, waiting instead of
re-routing)::

    table = ReservationTable(clearance=7.0)          # 0.1 nm units
    table.park("a1", (0, 0, 0)); table.park("a2", (50, 0, 0))
    table.blockers("a1", (0, 0, 0), (0, 40, 0))      # [] -> free to go
    table.reserve("a1", (0, 0, 0), (0, 40, 0))
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations

Vec = tuple[float, float, float]


@dataclass(frozen=True)
class Reservation:
    """The swept segment ``start``→``end`` an agent may occupy (a point when they are equal)."""

    agent_id: str
    start: Vec
    end: Vec


def _sub(a: Vec, b: Vec) -> Vec:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def _dot(a: Vec, b: Vec) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _clamp(v: float) -> float:
    return 0.0 if v < 0.0 else 1.0 if v > 1.0 else v


def segment_distance(p1: Vec, q1: Vec, p2: Vec, q2: Vec) -> float:
    """Smallest distance between segments p1–q1 and p2–q2 (points allowed)."""
    d1, d2, r = _sub(q1, p1), _sub(q2, p2), _sub(p1, p2)
    a, e, f = _dot(d1, d1), _dot(d2, d2), _dot(d2, r)
    eps = 1e-12
    if a <= eps and e <= eps:
        s = t = 0.0
    elif a <= eps:
        s, t = 0.0, _clamp(f / e)
    else:
        c = _dot(d1, r)
        if e <= eps:
            s, t = _clamp(-c / a), 0.0
        else:
            b = _dot(d1, d2)
            denom = a * e - b * b
            s = _clamp((b * f - c * e) / denom) if denom > eps else 0.0
            t = (b * s + f) / e
            if t < 0.0:
                s, t = _clamp(-c / a), 0.0
            elif t > 1.0:
                s, t = _clamp((b - c) / a), 1.0
    c1 = (p1[0] + d1[0] * s, p1[1] + d1[1] * s, p1[2] + d1[2] * s)
    c2 = (p2[0] + d2[0] * t, p2[1] + d2[1] * t, p2[2] + d2[2] * t)
    return math.dist(c1, c2)


class ReservationTable:
    """Who may be where until further notice; ``clearance`` in 0.1 nm units."""

    def __init__(self, clearance: float) -> None:
        self.clearance = clearance
        self._by_agent: dict[str, Reservation] = {}

    def park(self, agent_id: str, at: Vec) -> None:
        """The agent stands at ``at`` (arrived, idle, or last known place of a lost agent)."""
        self._by_agent[agent_id] = Reservation(agent_id, at, at)

    def reserve(self, agent_id: str, start: Vec, end: Vec) -> None:
        self._by_agent[agent_id] = Reservation(agent_id, start, end)

    def drop(self, agent_id: str) -> None:
        self._by_agent.pop(agent_id, None)

    def get(self, agent_id: str) -> Reservation | None:
        return self._by_agent.get(agent_id)

    def blockers(self, agent_id: str, start: Vec, end: Vec) -> list[str]:
        """Agents whose reservation comes closer than the clearance to ``start``→``end``.

        An agent already too close to another (after an E-stop, or drift) may still make a move
        along which it never gets closer than it is now: that is how a jam clears itself.
        """
        found = []
        for other in self._by_agent.values():
            if other.agent_id == agent_id:
                continue
            closest = segment_distance(start, end, other.start, other.end)
            if closest >= self.clearance:
                continue
            now = segment_distance(start, start, other.start, other.end)
            if closest < now - 1e-9:
                found.append(other.agent_id)
        return found

    def is_free(self, agent_id: str, start: Vec, end: Vec) -> bool:
        return not self.blockers(agent_id, start, end)

    def reservations(self) -> list[Reservation]:
        return list(self._by_agent.values())


def min_clearance(reservations: Iterable[Reservation]) -> float:
    """Independent check: the smallest distance between any two agents' reservations."""
    smallest = math.inf
    for a, b in combinations(list(reservations), 2):
        smallest = min(smallest, segment_distance(a.start, a.end, b.start, b.end))
    return smallest
