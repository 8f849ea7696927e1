"""Stage 3's swarm part: start the swarm service and simulator, send them the detections, follow
the repairs to the end and keep what the service reported (statuses, agent paths).

The simulator (``atomlab sim swarm --surface``) works on the same surface file as the STM
simulator and writes each repair back to it; it reports no defects of its own
(``--no-report-defects``), so the service repairs exactly what the scan found.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from atomlab.core.errors import ConnectionFailedError, OperationTimeoutError, UnavailableError
from atomlab.core.settings import AtomlabSettings
from atomlab.lab.detection import Detection
from atomlab.lab.services import Service, ServiceSet, line_match

POLL_S = 0.25
"""How often the service is asked how the repairs stand (and where the agents are)."""
HTTP_TIMEOUT_S = 10.0
TERMINAL = frozenset({"completed", "failed", "unrepairable"})
SERVE_READY = r"swarm service on (http://\S+) "


@dataclass(frozen=True)
class SwarmEndpoints:
    http_url: str
    ws_url: str


def auth_headers(
    settings: AtomlabSettings, scope: Literal["read", "ingest", "control"]
) -> dict[str, str]:
    """``Authorization`` for ``scope`` from the tokens the service keeps in its data home, when
    the service has authentication (C5); no headers otherwise."""
    try:
        from atomlab.swarm import bearer_headers  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return {}
    headers: dict[str, str] = bearer_headers(settings, scope)
    return headers


def launch_service(services: ServiceSet, *, common: Sequence[str]) -> Service:
    """Start ``swarm serve`` on a free port (without waiting: it takes a few seconds to import
    its stack, which the demo overlaps with other work)."""
    return services.launch("swarm-serve", [*common, "swarm", "serve", "--port", "0"])


def service_url(
    services: ServiceSet,
    serve: Service,
    *,
    timeout_s: float,
    should_stop: Callable[[], bool] | None = None,
) -> SwarmEndpoints:
    """Wait until ``swarm serve`` listens; its HTTP and WebSocket addresses."""
    if serve.ready_value is None:
        services.wait_ready(
            serve, line_match(SERVE_READY), timeout_s=timeout_s, should_stop=should_stop
        )
    http_url = str(serve.ready_value[0])
    return SwarmEndpoints(
        http_url=http_url, ws_url=http_url.replace("http://", "ws://", 1) + "/ws/isaac"
    )


def launch_simulator(
    services: ServiceSet,
    endpoints: SwarmEndpoints,
    *,
    common: Sequence[str],
    surface_path: Path,
    ground_truth_path: Path,
    agents: int,
    seed: int,
    reach_nm: float,
    time_scale: float,
) -> Service:
    """Start ``sim swarm`` on the shared surface, reporting no defects of its own."""
    return services.launch(
        "sim-swarm",
        [
            *common,
            "sim",
            "swarm",
            "--url",
            endpoints.ws_url,
            "--agents",
            str(agents),
            "--seed",
            str(seed),
            "--surface",
            str(surface_path),
            "--no-report-defects",
            "--reach-nm",
            str(reach_nm),
            "--time-scale",
            str(time_scale),
            "--ground-truth",
            str(ground_truth_path),
        ],
    )


def wait_linked(
    client: SwarmClient,
    sim: Service,
    serve: Service,
    *,
    timeout_s: float,
) -> None:
    """Wait until the service reports the simulator's link up."""
    deadline = time.monotonic() + timeout_s
    while not client.linked():
        for service in (sim, serve):
            if not service.alive:
                raise UnavailableError(
                    f"{service.name} exited with status {service.returncode}; the end of its "
                    f"log ({service.log_path}):\n{service.log_tail()}",
                    log=str(service.log_path),
                )
        if time.monotonic() > deadline:
            raise UnavailableError(
                f"the swarm simulator did not connect to {client.base_url} within "
                f"{timeout_s:.0f} s; see {sim.log_path} and {serve.log_path}",
                log=str(sim.log_path),
            )
        time.sleep(POLL_S)


class SwarmClient:
    """The few calls the demo makes to the swarm service's HTTP API."""

    def __init__(self, base_url: str, settings: AtomlabSettings) -> None:
        self.base_url = base_url
        self._client = httpx.Client(base_url=base_url, timeout=HTTP_TIMEOUT_S)
        self._ingest = auth_headers(settings, "ingest")
        self._read = auth_headers(settings, "read") or self._ingest

    def __enter__(self) -> SwarmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ConnectionFailedError(
                f"the swarm service at {self.base_url} did not answer {method} {path}: {exc}",
                url=self.base_url,
            ) from None
        if response.status_code >= 400:
            raise UnavailableError(
                f"the swarm service refused {method} {path} ({response.status_code}): "
                f"{response.text[:300]}",
                status=response.status_code,
            )
        return response.json()

    def linked(self) -> bool:
        try:
            health = self._call("GET", "/health", headers=self._read)
        except (ConnectionFailedError, UnavailableError):
            return False
        return bool(health.get("link", {}).get("connected"))

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/health", headers=self._read)
        return result

    def ingest(self, coordinates: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        body = {"coordinates": list(coordinates), "correlation_id": "atomlab-demo"}
        result: dict[str, Any] = self._call(
            "POST", "/api/sensor-data", json=body, headers=self._ingest
        )
        return result

    def defects(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call(
            "GET", "/api/defects", params={"limit": 1000}, headers=self._read
        )
        return result

    def agents(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/api/agents", headers=self._read)
        return result

    def commands(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/api/commands", headers=self._read)
        return result


def sensor_coordinates(
    detections: Sequence[Detection], *, surface_nm: float
) -> list[dict[str, Any]]:
    """Detections as the service's sensor readings: on the 0.1 nm grid, inside the surface."""
    readings = []
    for d in detections:
        x, y = _on_grid(d.x_nm, surface_nm), _on_grid(d.y_nm, surface_nm)
        readings.append(
            {"x": x, "y": y, "z": 0.0, "defect_type": d.kind, "severity": int(d.severity)}
        )
    return readings


def _on_grid(value_nm: float, side_nm: float) -> float:
    units = round(value_nm * 10)
    side = round(side_nm * 10)
    return float(units % side) / 10  # the surface repeats: 20.0 nm is 0.0 nm


@dataclass
class RepairOutcome:
    """How the repairs went, as the service reported it."""

    ingested: dict[str, str] = field(default_factory=dict)
    """detection id -> the service's defect id."""
    ingest_reply: dict[str, Any] = field(default_factory=dict)
    defects: list[dict[str, Any]] = field(default_factory=list)
    agents: list[dict[str, Any]] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)
    paths: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    duration_s: float = 0.0
    timed_out: bool = False
    health: dict[str, Any] = field(default_factory=dict)

    def status_of(self, detection_id: str) -> str | None:
        defect_id = self.ingested.get(detection_id)
        for d in self.defects:
            if d["defect_id"] == defect_id:
                return str(d["status"])
        return None

    def counts(self) -> dict[str, int]:
        tally: dict[str, int] = {}
        for d in self.defects:
            tally[d["status"]] = tally.get(d["status"], 0) + 1
        return tally


def repair(
    client: SwarmClient,
    detections: Sequence[Detection],
    *,
    surface_nm: float,
    timeout_s: float,
    note: Callable[[str], None] = lambda _m: None,
) -> RepairOutcome:
    """Send ``detections`` to the service and follow them until each is completed, failed or
    unrepairable (or ``timeout_s`` passes: then :attr:`RepairOutcome.timed_out`)."""
    outcome = RepairOutcome()
    if not detections:
        return outcome
    started = time.monotonic()
    reply = client.ingest(sensor_coordinates(detections, surface_nm=surface_nm))
    outcome.ingest_reply = reply
    outcome.ingested = {d.id: str(i) for d, i in zip(detections, reply["defect_ids"], strict=False)}
    wanted = set(outcome.ingested.values())
    note(
        f"sent {len(detections)} detections: {reply['accepted']} queued, "
        f"{reply['duplicates']} duplicates, {reply['unrepairable']} unrepairable"
    )
    last_told = ""
    deadline = started + timeout_s
    while True:
        defects = [d for d in client.defects() if d["defect_id"] in wanted]
        agents = client.agents()
        _extend_paths(outcome.paths, agents)
        outcome.defects, outcome.agents = defects, agents
        counts = outcome.counts()
        told = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        if told != last_told:
            note(f"defects: {told}")
            last_told = told
        if len(defects) >= len(wanted) and all(d["status"] in TERMINAL for d in defects):
            break
        if time.monotonic() > deadline:
            outcome.timed_out = True
            note(f"gave up waiting after {timeout_s:.0f} s: {told}")
            break
        time.sleep(POLL_S)
    outcome.duration_s = time.monotonic() - started
    outcome.commands = [c for c in client.commands() if c["defect_id"] in wanted]
    outcome.paths = routes(outcome.paths, outcome.commands)
    outcome.health = client.health()
    return outcome


def routes(
    reported: Mapping[str, Sequence[tuple[float, float]]], commands: Sequence[Mapping[str, Any]]
) -> dict[str, list[tuple[float, float]]]:
    """Each agent's route as the service sent it: where it was first seen, then the target of
    each of its commands in the order they were made."""
    out: dict[str, list[tuple[float, float]]] = {
        agent: [track[0]] for agent, track in reported.items() if track
    }
    for command in sorted(commands, key=lambda c: str(c["created_at"])):
        target = command["target"]
        point = (float(target["x"]), float(target["y"]))
        track = out.setdefault(str(command["agent_id"]), [])
        if not track or track[-1] != point:
            track.append(point)
    return out


def _extend_paths(
    paths: dict[str, list[tuple[float, float]]], agents: Sequence[Mapping[str, Any]]
) -> None:
    for agent in agents:
        position = agent["position"]
        point = (float(position["x"]), float(position["y"]))
        track = paths.setdefault(str(agent["agent_id"]), [])
        if not track or track[-1] != point:
            track.append(point)


def read_repair_log(path: Path) -> dict[int, bool]:
    """From the swarm simulator's ground-truth log: true defect id -> repaired (the last repair
    attempt on it succeeded). Read only to score the run, never to drive it."""
    repaired: dict[int, bool] = {}
    if not path.is_file():
        return repaired
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a stop
        if record.get("kind") == "repair":
            defect_id = int(record["defect_id"])
            repaired[defect_id] = repaired.get(defect_id, False) or bool(record["success"])
    return repaired


def wait_until_settled(path: Path, *, quiet_s: float, timeout_s: float) -> None:
    """Wait until ``path`` has not changed for ``quiet_s`` (the STM simulator follows the shared
    surface file every 0.2 s; a scan started earlier could miss the last repair)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            return
        if age >= quiet_s:
            return
        time.sleep(min(quiet_s - age, POLL_S))
    raise OperationTimeoutError(
        f"{path} kept changing for {timeout_s:.0f} s; the swarm simulator is still repairing",
        path=str(path),
    )
