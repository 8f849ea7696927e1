"""The demo: the lab's data spine end to end, in a fresh folder, with its own servers.

::

    result = run_demo(demo_config("standard", seed=0, home=home), progress=StderrProgress())
    result.report_path, result.to_dict()["stages"]["survey"]["detection"]["precision"]

Stages (docs/demo.md): (1) the STM simulator and an expert session recorded by the trajectory
monitor; (2) the learning pipeline; (3) a survey scan, defect detection from the image, repair
by the swarm service and simulator, and a re-scan; (4) defect triage by the engine (offline);
(5) one HTML report. The demo tracks itself with the run tracker (``<run>/runs``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from atomlab.core.errors import (
    AtomlabError,
    ExitCode,
    InterruptedRunError,
    TerminatedError,
    UnavailableError,
)
from atomlab.core.settings import AtomlabSettings, load_settings
from atomlab.instrument import NanonisClient, WriteGuard, load_catalog
from atomlab.lab.config import (
    ACTION_WINDOW_S,
    MONITOR_INTERVAL_S,
    DemoConfig,
)
from atomlab.lab.detection import Detection, DetectionResult, ScanImage, detect_defects
from atomlab.lab.expert import ExpertSession, imaging_moves, record_expert_session
from atomlab.lab.matching import MATCH_TOLERANCE_NM, Located, MatchReport, distance_nm, match
from atomlab.lab.progress import DemoProgress, SilentProgress
from atomlab.lab.repair import (
    RepairOutcome,
    SwarmClient,
    SwarmEndpoints,
    launch_service,
    launch_simulator,
    read_repair_log,
    repair,
    service_url,
    wait_linked,
    wait_until_settled,
)
from atomlab.lab.report import REPORT_NAME, ReportInputs, build_report, commands_table, views
from atomlab.lab.scanning import scan_surface
from atomlab.lab.services import (
    Service,
    ServiceSet,
    child_env,
    json_event,
    line_match,
    stop_descendants,
)
from atomlab.lab.training import (
    LearningOutcome,
    StageSkipped,
    learning_pipeline,
    run_learning,
    telemetry_samples,
)
from atomlab.lab.triage import TriageOutcome, run_triage
from atomlab.surface import Surface, load_surface, save_surface
from atomlab.tracking import NullProgress, RunCancelled, RunStatus, RunTracker, StepSpec
from atomlab.trajectory import open_store

DEMO_DIR = "demo"
SURFACE_FILE = "surface.json"
SETTINGS_FILE = "atomlab.yaml"
GROUND_TRUTH_FILE = "swarm-ground-truth.jsonl"
RETRY_BUDGET = 5
"""Repair attempts per defect (the service's default is 3): a simulated repair works 4 times in 5,
so three misses in a row would leave one defect in 100 unrepaired."""
SETTLE_QUIET_S = 0.5
"""The after-scan starts once the shared surface file has been quiet this long (the STM follows
it every 0.2 s)."""

STAGES: tuple[tuple[str, str, float], ...] = (
    ("expert", "STM simulator and an expert session, recorded by the trajectory monitor", 15),
    ("learning", "the learning pipeline (--preset demo), tracked by the run tracker", 90),
    ("survey", "scan, detect defects in the image, repair with the swarm, re-scan", 45),
    ("triage", "the engine's defect-triage pipeline over the detections (offline)", 5),
    ("report", "one self-contained HTML report", 5),
)
COMMANDS = {
    "1 expert session": "atomlab sim spm & atomlab trajectory monitor run --duration 30",
    "2 learning": "atomlab learn run --preset demo",
    "3 survey and repair": "atomlab swarm serve & atomlab sim swarm & atomlab swarm ingest FILE",
    "4 triage": "atomlab engine run defect-triage --input scans.jsonl --output triage.jsonl",
    "5 report / live view": "atomlab dashboard --home RUN_FOLDER",
}


class DemoFailedError(AtomlabError):
    """A stage of the demo failed (the others ran; the details hold every stage's result)."""

    exit_code = ExitCode.UNEXPECTED
    type_name = "demo_failed"


@dataclass
class StageResult:
    name: str
    title: str
    status: str = "pending"
    """``ok``, ``skipped``, ``failed`` or ``pending`` (not reached)."""
    reason: str | None = None
    duration_s: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "status": self.status,
            "reason": self.reason,
            "duration_s": round(self.duration_s, 2),
            **self.figures,
        }


@dataclass
class DemoResult:
    config: DemoConfig
    run_dir: Path
    stages: dict[str, StageResult]
    report_path: Path | None = None
    duration_s: float = 0.0
    servers: list[dict[str, Any]] = field(default_factory=list)
    tracker_run_id: str | None = None

    @property
    def failed(self) -> list[str]:
        return [name for name, s in self.stages.items() if s.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        plain: dict[str, Any] = _plain(self._fields())
        return plain

    def _fields(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "report": str(self.report_path) if self.report_path else None,
            "preset": self.config.preset,
            "seed": self.config.seed,
            "duration_s": round(self.duration_s, 2),
            "tracked_run": self.tracker_run_id,
            "stages": {name: s.to_dict() for name, s in self.stages.items()},
            "servers": self.servers,
        }


def create_run_dir(home: Path) -> Path:
    """A new folder ``<home>/demo/<UTC time>-<6 hex>`` (a second run never shares it)."""
    root = home / DEMO_DIR
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    while True:
        candidate = root / f"{stamp}-{secrets.token_hex(3)}"
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate


def run_demo(config: DemoConfig, *, progress: DemoProgress | None = None) -> DemoResult:
    """Run the demo. Raises :class:`InterruptedRunError` / :class:`TerminatedError` on SIGINT /
    SIGTERM (every process it started is stopped first) and :class:`DemoFailedError` when a
    stage failed (after the others ran and the report was written)."""
    return _DemoRun(config, progress or SilentProgress()).execute()


class _DemoRun:
    """One run's state, shared by its stages."""

    def __init__(self, config: DemoConfig, progress: DemoProgress) -> None:
        self.config = config
        self.progress = progress
        self.run_dir = create_run_dir(config.home)
        self.result = DemoResult(
            config=config,
            run_dir=self.run_dir,
            stages={name: StageResult(name, title) for name, title, _ in STAGES},
        )
        self.surface_path = self.run_dir / SURFACE_FILE
        self.settings_path = self.run_dir / SETTINGS_FILE
        self.services = ServiceSet(self.run_dir, env=child_env(), die_with_parent=not config.keep)
        self.tracker: RunTracker | None = None
        self.surface = Surface.generate(
            config.seed,
            width=config.surface_units,
            height=config.surface_units,
            n_defects=config.defects,
            n_steps=1,
        )
        self.truth = list(self.surface.defects)
        self.spm: Service | None = None
        self.serve: Service | None = None
        self.sim_swarm: Service | None = None
        self.swarm_url: str | None = None
        self.expert: ExpertSession | None = None
        self.learning: LearningOutcome | None = None
        self.learning_note = ""
        self.before: ScanImage | None = None
        self.after: ScanImage | None = None
        self.found: DetectionResult | None = None
        self.after_found: DetectionResult | None = None
        self.match: MatchReport | None = None
        self.repairs: RepairOutcome | None = None
        self.verification: list[dict[str, Any]] = []
        self.triage: TriageOutcome | None = None
        self.settings: AtomlabSettings | None = None

    # -- the run -----------------------------------------------------------------------------

    def execute(self) -> DemoResult:
        started = time.monotonic()
        interrupted: BaseException | None = None
        try:
            self._prepare()
            with self._tracker() as tracker:
                self.tracker = tracker
                self.result.tracker_run_id = tracker.run_id
                tracker.log_params({"demo": self.config.to_dict()})
                self._launch_servers()
                stages: list[tuple[str, Callable[[], dict[str, Any]], Callable[[], None]]] = [
                    ("expert", self._expert_stage, _nothing),
                    ("learning", self._learning_stage, self._learning_check),
                    ("survey", self._survey_stage, _nothing),
                    ("triage", self._triage_stage, self._triage_check),
                    ("report", self._report_stage, self._report_check),
                ]
                for number, (name, run, check) in enumerate(stages, start=1):
                    self._run_stage(number, name, run, check)
                if self.result.failed:
                    tracker.finish(
                        RunStatus.FAILED, reason="stages failed: " + ", ".join(self.result.failed)
                    )
        except (KeyboardInterrupt, RunCancelled) as exc:
            interrupted = exc
        finally:
            with _sigint_ignored():
                self.result.duration_s = time.monotonic() - started
                if interrupted is None and self.config.keep and not self.result.failed:
                    try:
                        self._keep_servers()
                    except BaseException:
                        self._shutdown()  # never leave servers behind that nobody was told of
                        raise
                else:
                    self._shutdown()
        if interrupted is not None:
            signum = getattr(interrupted, "signum", signal.SIGINT)
            details = {"run_dir": str(self.run_dir), "stages": self.result.to_dict()["stages"]}
            message = f"demo stopped; every process it started is stopped; data in {self.run_dir}"
            if signum in (signal.SIGTERM, signal.SIGHUP):
                name = signal.Signals(signum).name
                raise TerminatedError(f"{message} ({name})", **details)
            raise InterruptedRunError(message, **details)
        if self.result.failed:
            raise DemoFailedError(
                f"demo stage(s) failed: {', '.join(self.result.failed)} (see the report and "
                f"{self.run_dir / 'logs'}); "
                + "; ".join(f"{n}: {self.result.stages[n].reason}" for n in self.result.failed),
                **self.result.to_dict(),
            )
        return self.result

    def _prepare(self) -> None:
        save_surface(self.surface, self.surface_path)
        side = self.config.surface_nm
        settings = {
            "swarm": {
                "bounds_x_nm": [0.0, side],
                "bounds_y_nm": [0.0, side],
                "llm_planner": "off",
                "retry_budget": RETRY_BUDGET,
            },
            "llm": {"provider": "offline"},
        }
        self.settings_path.write_text(yaml.safe_dump(settings), encoding="utf-8")
        self.settings = load_settings(
            config_path=self.settings_path, overrides={"home": self.run_dir}, environ={}
        ).settings

    @contextlib.contextmanager
    def _tracker(self) -> Iterator[RunTracker]:
        assert self.settings is not None
        steps = [StepSpec(name=name, expected_s=expected) for name, _, expected in STAGES]
        with RunTracker(
            "demo",
            steps,
            home=self.run_dir,
            settings=self.settings.tracking,
            progress=NullProgress(),
            handle_signals=threading.current_thread() is threading.main_thread(),
            tags={"preset": self.config.preset, "seed": str(self.config.seed)},
        ) as tracker:
            yield tracker

    def _run_stage(
        self,
        number: int,
        name: str,
        run: Callable[[], dict[str, Any]],
        check: Callable[[], None],
    ) -> None:
        assert self.tracker is not None
        stage = self.result.stages[name]
        self.progress.stage(number, len(STAGES), name, stage.title)
        started = time.monotonic()
        try:
            if name in self.config.skip:
                raise StageSkipped(f"skipped on request (--skip {name})")
            check()
        except StageSkipped as skip:
            stage.status, stage.reason = "skipped", skip.reason
            self.tracker.skip_step(name, skip.reason)
            self.progress.skipped(skip.reason)
            return
        self.tracker.start_step(name)
        try:
            stage.figures = run()
        except (AtomlabError, OSError, RuntimeError, ValueError) as exc:
            message = (
                exc.message if isinstance(exc, AtomlabError) else f"{type(exc).__name__}: {exc}"
            )
            stage.status, stage.reason = "failed", message
            self.tracker.fail_step(name, message)
            self.progress.note(f"failed - {message}")
        else:
            stage.status = "ok"
            self.tracker.finish_step(name)
            self.progress.done(_headline(name, stage.figures))
        finally:
            stage.duration_s = time.monotonic() - started

    # -- servers -----------------------------------------------------------------------------

    def _common_args(self) -> list[str]:
        return ["--home", str(self.run_dir), "--config", str(self.settings_path)]

    def _launch_servers(self) -> None:
        """Start the STM simulator and the swarm service at once (their start-ups overlap with
        each other and with the first stage)."""
        self.serve = launch_service(self.services, common=self._common_args())
        self.spm = self.services.launch(
            "sim-spm",
            [
                *self._common_args(),
                "sim",
                "spm",
                "--port",
                "0",
                "--seed",
                str(self.config.seed),
                "--surface",
                str(self.surface_path),
                "--no-disturbances",
                "--json",
            ],
        )

    def _swarm(self) -> SwarmEndpoints:
        """The swarm service's address; starts the swarm simulator against it the first time."""
        if self.serve is None:
            raise UnavailableError("the swarm service was not started")
        endpoints = service_url(self.services, self.serve, timeout_s=self.config.start_timeout_s)
        if self.sim_swarm is None:
            self.sim_swarm = launch_simulator(
                self.services,
                endpoints,
                common=self._common_args(),
                surface_path=self.surface_path,
                ground_truth_path=self.run_dir / GROUND_TRUTH_FILE,
                agents=self.config.agents,
                seed=self.config.seed,
                reach_nm=self.config.repair_reach_nm,
                time_scale=self.config.swarm_time_scale,
            )
        return endpoints

    def _spm_port(self) -> int:
        if self.spm is None:
            raise UnavailableError("the STM simulator was not started")
        if self.spm.ready_value is not None:
            return int(self.spm.ready_value["ports"][0])
        ready = self.services.wait_ready(
            self.spm, json_event("listening"), timeout_s=self.config.start_timeout_s
        ).ready_value
        port = int(ready["ports"][0])
        self.progress.note(f"STM simulator (Nanonis TCP) on 127.0.0.1:{port}")
        return port

    def _keep_servers(self) -> None:
        self._start_dashboard()
        kept = [s for s in self.services.services.values() if s.alive]
        for service in kept:
            entry: dict[str, Any] = {"name": service.name, "pid": service.pid}
            entry["url"] = self._url_of(service)
            entry["log"] = str(service.log_path)
            self.result.servers.append(entry)
        self.services.detach()

    def _url_of(self, service: Service) -> str | None:
        """Where a kept server answers (``None`` when it never said)."""
        ready = service.ready_value
        if service.name == "sim-spm" and ready:
            return f"nanonis://127.0.0.1:{ready['ports'][0]}"
        if service.name == "swarm-serve" and ready:
            return str(ready[0])
        if service.name == "dashboard" and ready:
            return str(ready["url"])
        if service.name == "sim-swarm" and self.swarm_url:
            return self.swarm_url.replace("http://", "ws://", 1) + "/ws/isaac"
        return None

    def _start_dashboard(self) -> None:
        """``atomlab dashboard`` on this run's data home, when this atomlab has it."""
        if importlib.util.find_spec("atomlab.cli.dashboard") is None:
            self.result.servers.append(
                {"name": "dashboard", "note": "this version of atomlab has no dashboard command"}
            )
            return
        args = [*self._common_args(), "dashboard", "--port", "0", "--json"]
        args += ["--trajectory-db", str(self.run_dir / "trajectories.sqlite")]
        if self.spm is not None and self.spm.ready_value:
            args += ["--instrument", f"127.0.0.1:{self.spm.ready_value['ports'][0]}"]
        try:
            self.services.start(
                "dashboard",
                args,
                ready=json_event("listening"),
                timeout_s=self.config.start_timeout_s,
            )
        except UnavailableError as exc:
            self.result.servers.append({"name": "dashboard", "note": exc.message})

    def _shutdown(self) -> None:
        self.services.stop_all()
        stop_descendants()

    # -- stage 1 -----------------------------------------------------------------------------

    def _expert_stage(self) -> dict[str, Any]:
        port = self._spm_port()
        moves = imaging_moves(frame_nm=self.config.frame_nm, speed_nm_s=self.config.scan_speed_nm_s)
        self.expert = record_expert_session(
            host="127.0.0.1",
            port=port,
            db_path=self.run_dir / "trajectories.sqlite",
            run_name=f"demo-expert-seed-{self.config.seed}",
            audit_log=self.run_dir / "instrument-audit.jsonl",
            moves=moves,
            interval_s=MONITOR_INTERVAL_S,
            action_window_s=ACTION_WINDOW_S,
            hold_s=self.config.expert_hold_s,
            note=self.progress.note,
        )
        # While the learning runs, the swarm simulator connects to the service.
        with contextlib.suppress(AtomlabError):
            self._swarm()
        return {"session": self.expert.to_dict()}

    # -- stage 2 -----------------------------------------------------------------------------

    def _learning_check(self) -> None:
        try:
            learning_pipeline()
        except StageSkipped as skip:
            self.learning_note = f"Skipped: {skip.reason}."
            raise

    def _learning_stage(self) -> dict[str, Any]:
        self.learning = run_learning(
            home=self.run_dir,
            seed=self.config.seed,
            preset=self.config.learning_preset,
            progress=self.progress,
            settings=self.settings,
        )
        return {"learning": self.learning.to_dict()}

    # -- stage 3 -----------------------------------------------------------------------------

    def _survey_stage(self) -> dict[str, Any]:
        assert self.settings is not None
        port = self._spm_port()
        side = self.config.surface_nm
        origin = (side / 2, side / 2)  # the simulator puts piezo (0, 0) over the centre
        endpoints = self._swarm()
        assert self.serve is not None and self.sim_swarm is not None
        with SwarmClient(endpoints.http_url, self.settings) as swarm:
            wait_linked(swarm, self.sim_swarm, self.serve, timeout_s=self.config.start_timeout_s)
        self.swarm_url = endpoints.http_url
        self.progress.note(f"swarm service on {endpoints.http_url}, simulator linked")
        with NanonisClient("127.0.0.1", port, call_timeout_s=10.0) as client:
            guard = WriteGuard(
                client,
                load_catalog(),
                allow_writes=True,
                audit_log=self.run_dir / "instrument-audit.jsonl",
                who="demo-survey",
            )
            self.before = self._scan(client, guard, origin, "survey scan")
            self.before.save(self.run_dir / "scans" / "before.npz")
            self.found = detect_defects(self.before, period_nm=(side, side), id_prefix="det")
            found = self.found
            self.progress.note(
                f"detected {len(found.detections)} defects in the image (noise "
                f"{found.noise_pm:.1f} pm, thresholds +{found.threshold_bump_pm:.0f}"
                f"/-{found.threshold_pit_pm:.0f} pm)"
            )
            self.match = self._score(self.found.detections)
            self.progress.note(
                f"against the seeded surface: precision {self.match.precision:.2f}, recall "
                f"{self.match.recall:.2f} (tolerance {self.match.tolerance_nm} nm)"
            )
            with SwarmClient(endpoints.http_url, self.settings) as swarm:
                self.repairs = repair(
                    swarm,
                    self.found.detections,
                    surface_nm=side,
                    timeout_s=self.config.swarm_timeout_s,
                    note=self.progress.note,
                )
            wait_until_settled(self.surface_path, quiet_s=SETTLE_QUIET_S, timeout_s=30.0)
            self.after = self._scan(client, guard, origin, "re-scan")
            self.after.save(self.run_dir / "scans" / "after.npz")
        self.after_found = detect_defects(self.after, period_nm=(side, side), id_prefix="after")
        self.verification = self._verify()
        verified = sum(row["verified"] for row in self.verification)
        if self.tracker is not None and self.match is not None and self.repairs is not None:
            self.tracker.log_metrics(
                {
                    "detection/precision": self.match.precision,
                    "detection/recall": self.match.recall,
                    "detection/count": len(self.found.detections),
                    "repair/reported": self.repairs.counts().get("completed", 0),
                    "repair/verified": verified,
                    "repair/seconds": self.repairs.duration_s,
                }
            )
        self.progress.note(
            f"re-scan: {len(self.after_found.detections)} defects left in the image; "
            f"{verified} of {len(self.verification)} repairs verified"
        )
        return {"survey": self._survey_figures()}

    def _scan(
        self, client: NanonisClient, guard: WriteGuard, origin: tuple[float, float], what: str
    ) -> ScanImage:
        last = [-1]

        def shown(done: int, lines: int) -> None:
            quarter = 4 * done // max(lines, 1)
            if quarter != last[0]:
                last[0] = quarter
                self.progress.note(f"{what}: line {done}/{lines}")

        return scan_surface(
            client,
            guard,
            frame_nm=self.config.frame_nm,
            pixels=self.config.scan_pixels,
            speed_nm_s=self.config.scan_speed_nm_s,
            origin_nm=origin,
            on_progress=shown,
        )

    def _score(self, detections: list[Detection]) -> MatchReport:
        side = self.config.surface_nm
        truth = [
            Located(f"d{t.id}", t.x / 10, t.y / 10, t.kind.value, t.severity) for t in self.truth
        ]
        found = [Located(d.id, d.x_nm, d.y_nm, d.kind, d.severity) for d in detections]
        return match(found, truth, tolerance_nm=MATCH_TOLERANCE_NM, period_nm=(side, side))

    def _verify(self) -> list[dict[str, Any]]:
        """Per detection: the service's verdict, whether the re-scan still shows it, and what
        the seeded surface says (the simulator's record, used only to score)."""
        assert self.found is not None and self.after_found is not None
        side = self.config.surface_nm
        period = (side, side)
        truth_of = {p.detected: p.truth for p in (self.match.pairs if self.match else [])}
        repaired_truth = read_repair_log(self.run_dir / GROUND_TRUTH_FILE)
        remaining = {f"d{d.id}" for d in load_surface(self.surface_path).defects}
        rows = []
        for d in self.found.detections:
            still = any(
                distance_nm((d.x_nm, d.y_nm), (a.x_nm, a.y_nm), period) <= MATCH_TOLERANCE_NM
                for a in self.after_found.detections
            )
            status = self.repairs.status_of(d.id) if self.repairs else None
            true_id = truth_of.get(d.id)
            rows.append(
                {
                    "detection": d.id,
                    "x_nm": round(d.x_nm, 2),
                    "y_nm": round(d.y_nm, 2),
                    "kind": d.kind,
                    "service status": status,
                    "gone in re-scan": not still,
                    "verified": status == "completed" and not still,
                    "seeded defect": true_id,
                    "seeded defect repaired": (
                        None
                        if true_id is None
                        else true_id not in remaining
                        and repaired_truth.get(int(true_id[1:]), False)
                    ),
                }
            )
        return rows

    def _survey_figures(self) -> dict[str, Any]:
        assert self.before is not None and self.found is not None
        repairs = self.repairs or RepairOutcome()
        left = load_surface(self.surface_path).defects
        seeded_left = len(left)
        rescan = self._score_rescan(left)
        verified = sum(row["verified"] for row in self.verification)
        return {
            "surface_nm": self.config.surface_nm,
            "frame_nm": self.config.frame_nm,
            "pixels": self.before.shape[1],
            "seeded_defects": len(self.truth),
            "detection": {
                **(self.found.to_dict() if self.found else {}),
                **(self.match.to_dict() if self.match else {}),
            },
            "swarm": {
                "url": self.swarm_url,
                "agents": self.config.agents,
                "sent": len(repairs.ingested),
                "by_status": repairs.counts(),
                "commands": len(repairs.commands),
                "duration_s": round(repairs.duration_s, 2),
                "timed_out": repairs.timed_out,
                "halted": repairs.health.get("halted"),
            },
            "verification": {
                "verified": verified,
                "repairs_reported": repairs.counts().get("completed", 0),
                "left_in_rescan": len(self.after_found.detections) if self.after_found else None,
                "seeded_defects_left": seeded_left,
                "rescan_false_positives": rescan.false_positives if rescan else None,
                "rows": self.verification,
            },
        }

    def _score_rescan(self, remaining: Any) -> MatchReport | None:
        """The re-scan's detections against the defects really left (to score, never to act)."""
        if self.after_found is None:
            return None
        side = self.config.surface_nm
        truth = [Located(f"d{t.id}", t.x / 10, t.y / 10, t.kind.value) for t in remaining]
        found = [Located(d.id, d.x_nm, d.y_nm, d.kind) for d in self.after_found.detections]
        return match(found, truth, tolerance_nm=MATCH_TOLERANCE_NM, period_nm=(side, side))

    # -- stage 4 -----------------------------------------------------------------------------

    def _triage_check(self) -> None:
        if self.found is None:
            raise StageSkipped("there are no detections to triage (the survey did not scan)")

    def _triage_stage(self) -> dict[str, Any]:
        assert self.found is not None
        self.triage = run_triage(
            self.found.detections,
            work_dir=self.run_dir / "engine",
            scan_id=self.run_dir.name,
            sample=f"simulated surface, seed {self.config.seed}",
            size_nm=self.config.surface_nm,
        )
        return {"triage": self.triage.to_dict()}

    # -- stage 5 -----------------------------------------------------------------------------

    def _report_check(self) -> None:
        views()

    def _report_stage(self) -> dict[str, Any]:
        path = build_report(self._report_inputs(), self.run_dir / REPORT_NAME)
        self.result.report_path = path
        if self.tracker is not None:
            self.tracker.log_artifact(path, name=REPORT_NAME, kind="report")
        return {"report": {"path": str(path), "bytes": path.stat().st_size}}

    def _report_inputs(self) -> ReportInputs:
        side = self.config.surface_nm
        inputs = ReportInputs(
            title=f"atomlab demo · seed {self.config.seed} · {self.run_dir.name}",
            surface_nm=side,
            before=self.before,
            after=self.after,
            detections=list(self.found.detections) if self.found else [],
            after_detections=list(self.after_found.detections) if self.after_found else [],
            truth=[
                {"id": f"d{t.id}", "x_nm": t.x / 10, "y_nm": t.y / 10, "kind": t.kind.value}
                for t in self.truth
            ],
            match=self.match.to_dict() if self.match else None,
            verification_rows=self.verification,
            commands=commands_table(COMMANDS),
        )
        inputs.summary_rows = [
            {
                "stage": f"{k}. {s.name}",
                "status": s.status,
                "time (s)": round(s.duration_s, 1),
                "result": s.reason if s.status != "ok" else _headline(s.name, s.figures),
            }
            for k, s in enumerate(self.result.stages.values(), start=1)
            if s.name != "report"
        ]
        inputs.summary_text = (
            f"A {side:g} × {side:g} nm simulated surface (seed {self.config.seed}, "
            f"{len(self.truth)} seeded defects), imaged through the Nanonis protocol, its "
            "defects found in the image and repaired by the swarm. All data of this run: "
            f"{self.run_dir}."
        )
        self._add_expert(inputs)
        self._add_learning(inputs)
        self._add_swarm(inputs)
        if self.triage is not None:
            inputs.triage_rows = self.triage.rows
            inputs.triage_note = (
                f"Offline provider; surface quality: "
                f"{self.triage.scan_summary.get('surface_quality', 'n/a')}. "
                f"Input {self.triage.input_path}, output {self.triage.output_path}."
            )
        else:
            inputs.triage_note = self.result.stages["triage"].reason or "Triage did not run."
        if self.tracker is not None:
            inputs.telemetry = telemetry_samples(self.tracker.run_dir)
            inputs.telemetry_note = (
                "The demo's own process tree (the servers included), sampled by its run tracker "
                f"({self.tracker.run_dir})."
            )
        return inputs

    def _add_expert(self, inputs: ReportInputs) -> None:
        if self.expert is None:
            inputs.expert_note = self.result.stages["expert"].reason or "No expert session."
            return
        inputs.expert_note = (
            f"{len(self.expert.actions)} actions recorded in run '{self.expert.run_name}' of "
            f"{self.expert.db_path}; each is a guarded write ('self'), shown with the signals "
            "around it."
        )
        seen: set[str] = set()
        with open_store(self.expert.db_path) as store:
            for action in store.actions(self.expert.run_name):
                if action.spec_label in seen:
                    continue
                seen.add(action.spec_label)
                window = store.signal_window(
                    action.window_start_dt_s, action.window_end_dt_s, self.expert.run_name
                )
                inputs.windows.append((window, action))

    def _add_learning(self, inputs: ReportInputs) -> None:
        if self.learning is None:
            reason = self.result.stages["learning"].reason
            inputs.learning_note = self.learning_note or (f"Not run: {reason}." if reason else "")
            return
        inputs.curves = self.learning.curves
        inputs.comparison = self.learning.comparison
        inputs.learning_note = " ".join(self.learning.notes) or (
            f"Logged by the learning run in {self.learning.run_dir}."
        )

    def _add_swarm(self, inputs: ReportInputs) -> None:
        if self.repairs is None:
            inputs.swarm_note = self.result.stages["survey"].reason or "The swarm did not run."
            return
        inputs.swarm_defects = self.repairs.defects
        inputs.swarm_agents = self.repairs.agents
        inputs.swarm_paths = self.repairs.paths
        verified = sum(row["verified"] for row in self.verification)
        inputs.swarm_note = (
            f"{len(self.repairs.ingested)} detections sent to the swarm service; "
            f"{self.repairs.counts().get('completed', 0)} reported repaired (each checked by "
            f"the agent's own re-scan), {verified} confirmed gone in the STM re-scan."
        )


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars turned into Python ones (``--json`` must serialise it)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        return item()
    return value


def _nothing() -> None:
    return None


def _describe(exc: BaseException) -> str:
    return exc.message if isinstance(exc, AtomlabError) else f"{type(exc).__name__}: {exc}"


def _headline(name: str, figures: dict[str, Any]) -> str:
    """One line per stage for the progress and the report's summary."""
    if name == "expert":
        s = figures.get("session", {})
        return f"{s.get('samples')} samples, {s.get('actions')} actions recorded"
    if name == "learning":
        rows = figures.get("learning", {}).get("comparison", [])
        best = max(rows, key=lambda r: _num(r.get("score")), default=None)
        score = _num(best.get("score")) if best else -math.inf
        shown = f"{score:.3f}" if math.isfinite(score) else "n/a"
        return f"{len(rows)} policies compared" + (
            f"; best {best.get('policy')} ({shown})" if best else ""
        )
    if name == "survey":
        s = figures.get("survey", {})
        d, v = s.get("detection", {}), s.get("verification", {})
        return (
            f"{len(d.get('detections', []))} detected (precision {d.get('precision')}, recall "
            f"{d.get('recall')}), {v.get('verified')} repairs verified by re-scan"
        )
    if name == "triage":
        t = figures.get("triage", {})
        return f"{t.get('defects_triaged')} defects triaged ({t.get('status')})"
    if name == "report":
        return str(figures.get("report", {}).get("path"))
    return ""


def _num(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return -math.inf
    return number if math.isfinite(number) else -math.inf


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Clean-up (stopping the servers, bounded in time) is not itself cut short by a second
    Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


__all__ = [
    "COMMANDS",
    "STAGES",
    "DemoFailedError",
    "DemoResult",
    "StageResult",
    "create_run_dir",
    "line_match",
    "run_demo",
]
