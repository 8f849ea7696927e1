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

import numpy as np
import numpy.typing as npt

Vec = tuple[float, float, float]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]
INITIAL_ROWS = 64
EXACT_MARGIN = 1e-6  # vectorised distances this close to a decision are recomputed exactly


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


def paired_segment_distances(
    p1: FloatArray, q1: FloatArray, p2: FloatArray, q2: FloatArray
) -> FloatArray:
    """:func:`segment_distance` of each row pair: segment ``p1[i]``-``q1[i]`` to
    ``p2[i]``-``q2[i]``, all shaped (K, 3); the result is (K,). The same closest-point rule,
    vectorised."""
    d1, d2, r = q1 - p1, q2 - p2, p1 - p2
    a = np.einsum("ik,ik->i", d1, d1)
    e = np.einsum("ik,ik->i", d2, d2)
    b = np.einsum("ik,ik->i", d1, d2)
    c = np.einsum("ik,ik->i", d1, r)
    f = np.einsum("ik,ik->i", d2, r)
    eps = 1e-12
    a_point, e_point = a <= eps, e <= eps
    safe_a = np.where(a_point, 1.0, a)
    safe_e = np.where(e_point, 1.0, e)
    denom = a * e - b * b
    ok = denom > eps
    s = np.where(ok, np.clip((b * f - c * e) / np.where(ok, denom, 1.0), 0.0, 1.0), 0.0)
    t = (b * s + f) / safe_e
    s = np.where(t < 0.0, np.clip(-c / safe_a, 0.0, 1.0), s)
    s = np.where(t > 1.0, np.clip((b - c) / safe_a, 0.0, 1.0), s)
    t = np.clip(t, 0.0, 1.0)
    # Degenerate cases: the first segment a point, the second a point, or both.
    s = np.where(a_point, 0.0, np.where(e_point, np.clip(-c / safe_a, 0.0, 1.0), s))
    t = np.where(
        a_point, np.where(e_point, 0.0, np.clip(f / safe_e, 0.0, 1.0)), np.where(e_point, 0.0, t)
    )
    gap = r + d1 * s[:, None] - d2 * t[:, None]
    result: FloatArray = np.sqrt(np.einsum("ik,ik->i", gap, gap))
    return result


def segment_distances(p1: FloatArray, q1: FloatArray, p2: FloatArray, q2: FloatArray) -> FloatArray:
    """Every segment of ``p1``/``q1`` (M, 3) against every one of ``p2``/``q2`` (N, 3): (M, N)."""
    m, n = len(p1), len(p2)
    flat = paired_segment_distances(
        np.repeat(p1, n, axis=0), np.repeat(q1, n, axis=0), np.tile(p2, (m, 1)), np.tile(q2, (m, 1))
    )
    result: FloatArray = flat.reshape(m, n)
    return result


class ReservationTable:
    """Who may be where until further notice; ``clearance`` in 0.1 nm units.

    Reservations live in numpy arrays (a row per agent, updated in place), so checking one move
    against every other agent, or a whole dispatch slice of moves at once
    (:meth:`feasibility`), is one vectorised pass: a round with 256 agents stays in
    milliseconds.
    """

    def __init__(self, clearance: float) -> None:
        self.clearance = clearance
        self.version = 0  # changes whenever a reservation does (a dispatch round reads it)
        self._by_agent: dict[str, Reservation] = {}
        self._row: dict[str, int] = {}
        self._ids: list[str] = []
        self._starts: FloatArray = np.zeros((INITIAL_ROWS, 3))
        self._ends: FloatArray = np.zeros((INITIAL_ROWS, 3))

    def park(self, agent_id: str, at: Vec) -> None:
        """The agent stands at ``at`` (arrived, idle, or last known place of a lost agent)."""
        self.reserve(agent_id, at, at)

    def reserve(self, agent_id: str, start: Vec, end: Vec) -> None:
        reservation = Reservation(agent_id, start, end)
        if self._by_agent.get(agent_id) == reservation:
            return  # an idle agent reported where it already stood: nothing changed
        self.version += 1
        self._by_agent[agent_id] = reservation
        row = self._row.get(agent_id)
        if row is None:
            row = len(self._ids)
            if row == len(self._starts):
                self._starts = np.concatenate((self._starts, np.zeros_like(self._starts)))
                self._ends = np.concatenate((self._ends, np.zeros_like(self._ends)))
            self._row[agent_id] = row
            self._ids.append(agent_id)
        self._starts[row] = start
        self._ends[row] = end

    def drop(self, agent_id: str) -> None:
        if self._by_agent.pop(agent_id, None) is None:
            return
        self.version += 1
        row = self._row.pop(agent_id)
        last = len(self._ids) - 1
        if row != last:  # move the last row into the gap
            moved = self._ids[last]
            self._ids[row] = moved
            self._row[moved] = row
            self._starts[row] = self._starts[last]
            self._ends[row] = self._ends[last]
        self._ids.pop()

    def get(self, agent_id: str) -> Reservation | None:
        return self._by_agent.get(agent_id)

    def copy(self) -> ReservationTable:
        """An independent copy (for planning in another thread while this one changes)."""
        twin = ReservationTable(self.clearance)
        twin.version = self.version
        twin._by_agent = dict(self._by_agent)
        twin._row = dict(self._row)
        twin._ids = list(self._ids)
        twin._starts = self._starts.copy()
        twin._ends = self._ends.copy()
        return twin

    def _blocking(
        self, agent_ids: list[str], starts: FloatArray, targets: FloatArray
    ) -> tuple[IntArray, IntArray, IntArray]:
        """Which moves are blocked, and by whom: index arrays ``(a, j, k)`` meaning agent ``a``
        moving from ``starts[a]`` to ``targets[j]`` would come closer than the clearance to the
        reservation in row ``k``, and closer than it is now.

        Only pairs whose bounding boxes (the reservation's grown by the clearance) overlap are
        measured: two agents far apart never cost a distance computation, so a slice of moves
        among hundreds of agents stays cheap."""
        n = len(self._ids)
        empty = np.zeros(0, dtype=np.intp)
        if n == 0 or not agent_ids or len(targets) == 0:
            return empty, empty, empty
        others_p, others_q = self._starts[:n], self._ends[:n]
        res_lo = np.minimum(others_p, others_q) - self.clearance
        res_hi = np.maximum(others_p, others_q) + self.clearance
        seg_lo = np.minimum(starts[:, None, :], targets[None, :, :])
        seg_hi = np.maximum(starts[:, None, :], targets[None, :, :])
        overlap = np.ones((len(agent_ids), len(targets), n), dtype=bool)
        for axis in range(3):
            overlap &= seg_lo[:, :, None, axis] <= res_hi[None, None, :, axis]
            overlap &= seg_hi[:, :, None, axis] >= res_lo[None, None, :, axis]
        for a, agent_id in enumerate(agent_ids):  # an agent never blocks itself
            row = self._row.get(agent_id)
            if row is not None:
                overlap[a, :, row] = False
        ia, ij, ik = np.nonzero(overlap)
        if len(ia) == 0:
            return empty, empty, empty
        p1, q1 = starts[ia], targets[ij]
        p2, q2 = others_p[ik], others_q[ik]
        closest = paired_segment_distances(p1, q1, p2, q2)
        now = paired_segment_distances(p1, p1, p2, q2)
        near = (closest < self.clearance) & (closest < now - 1e-9)
        # Float noise of the vectorised form must never flip a decision that the exact scalar
        # rule (segment_distance) would take the other way: recompute the close calls.
        close_call = (closest < self.clearance + EXACT_MARGIN) & (
            (np.abs(closest - self.clearance) < EXACT_MARGIN)
            | (np.abs(closest - now) < EXACT_MARGIN)
        )
        for idx in np.flatnonzero(close_call):
            start, end = tuple(p1[idx]), tuple(q1[idx])
            other_p, other_q = tuple(p2[idx]), tuple(q2[idx])
            exact = segment_distance(start, end, other_p, other_q)
            exact_now = segment_distance(start, start, other_p, other_q)
            near[idx] = exact < self.clearance and exact < exact_now - 1e-9
        return ia[near], ij[near], ik[near]

    def feasibility(self, agent_ids: list[str], starts: list[Vec], targets: list[Vec]) -> BoolArray:
        """(A, J) boolean matrix: may agent ``a`` move from ``starts[a]`` to ``targets[j]``?"""
        free: BoolArray = np.ones((len(agent_ids), len(targets)), dtype=bool)
        if not agent_ids or not targets:
            return free
        ia, ij, _ = self._blocking(agent_ids, np.asarray(starts, float), np.asarray(targets, float))
        free[ia, ij] = False
        return free

    def blockers(self, agent_id: str, start: Vec, end: Vec) -> list[str]:
        """Agents whose reservation comes closer than the clearance to ``start``→``end``.

        An agent already too close to another (after an E-stop, or drift) may still make a move
        along which it never gets closer than it is now: that is how a jam clears itself.
        """
        _, _, ik = self._blocking([agent_id], np.asarray([start], float), np.asarray([end], float))
        return [self._ids[k] for k in sorted(set(ik.tolist()))]

    def blocked_by(
        self, agent_ids: list[str], starts: list[Vec], target: Vec
    ) -> dict[str, list[str]]:
        """For each agent moving from its start to ``target``: who blocks it ([] = free). One
        vectorised pass for all of them."""
        found: dict[str, list[str]] = {agent_id: [] for agent_id in agent_ids}
        if not agent_ids:
            return found
        ia, _, ik = self._blocking(
            agent_ids, np.asarray(starts, float), np.asarray([target], float)
        )
        for a, k in zip(ia.tolist(), ik.tolist(), strict=True):
            found[agent_ids[a]].append(self._ids[k])
        return found

    def is_free(self, agent_id: str, start: Vec, end: Vec) -> bool:
        ia, _, _ = self._blocking([agent_id], np.asarray([start], float), np.asarray([end], float))
        return len(ia) == 0

    def reservations(self) -> list[Reservation]:
        return list(self._by_agent.values())

    def nearest(self, agent_id: str, at: Vec) -> tuple[str, float] | None:
        """The other agent whose reservation comes closest to the point ``at``, and how close
        (None when there is no other reservation). One vectorised pass over the table."""
        n = len(self._ids)
        own = self._row.get(agent_id)
        rows = [k for k in range(n) if k != own]
        if not rows:
            return None
        point = np.asarray([at] * len(rows), float)
        distances = paired_segment_distances(point, point, self._starts[rows], self._ends[rows])
        best = int(np.argmin(distances))
        return self._ids[rows[best]], float(distances[best])


def min_clearance(reservations: Iterable[Reservation]) -> float:
    """Independent check: the smallest distance between any two agents' reservations."""
    smallest = math.inf
    for a, b in combinations(list(reservations), 2):
        smallest = min(smallest, segment_distance(a.start, a.end, b.start, b.end))
    return smallest
