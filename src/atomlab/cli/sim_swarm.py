"""``atomlab sim swarm``: run the swarm simulator against a swarm service's ``/ws/isaac``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from atomlab.cli import output
from atomlab.core.clock import Clock, SystemClock
from atomlab.core.errors import InterruptedRunError, InvalidInputError, TerminatedError
from atomlab.sim.swarm import ScaledClock, SwarmSimulator
from atomlab.sim.swarm_world import FaultConfig, GroundTruthLog, SwarmConfig, SwarmWorld
from atomlab.surface import UNITS_PER_NM, Surface, load_surface, save_surface

MAX_AGENTS = 1024
MAX_DEFECTS = 1000  # seeded placement is quadratic; ingest more with 'atomlab swarm ingest'
MAX_SIDE_NM = 1000.0
MAX_SECONDS = 1e7
SURFACE_SAVE_S = 0.1
"""How often ``--surface`` writes repairs back to the shared file (when something changed)."""


def _prob(help_text: str) -> Any:
    return typer.Option(min=0.0, max=1.0, help=help_text)


def swarm(
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="The service's WebSocket (default: the service running in this data home, "
            "else ws://<swarm.host>:<swarm.port>/ws/isaac).",
        ),
    ] = None,
    agents: Annotated[
        int, typer.Option("--agents", min=1, max=MAX_AGENTS, help="Number of agents.")
    ] = 16,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of surface, agents and faults.")
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration", min=0.0, max=MAX_SECONDS, help="Stop after this many simulated seconds."
        ),
    ] = None,
    time_scale: Annotated[
        float,
        typer.Option(
            "--time-scale", min=0.001, max=1000.0, help="Simulated seconds per real second."
        ),
    ] = 1.0,
    ground_truth: Annotated[
        Path | None,
        typer.Option(
            "--ground-truth",
            help="JSONL log of true positions, executions and repairs "
            "(default <home>/swarm-sim/ground-truth-<seed>.jsonl).",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the world of an existing --ground-truth log (after a stop or a crash).",
        ),
    ] = False,
    width_nm: Annotated[
        float, typer.Option("--width-nm", min=1.0, max=MAX_SIDE_NM, help="Surface width.")
    ] = 20.0,
    height_nm: Annotated[
        float, typer.Option("--height-nm", min=1.0, max=MAX_SIDE_NM, help="Surface height.")
    ] = 20.0,
    defects: Annotated[
        int, typer.Option("--defects", min=0, max=MAX_DEFECTS, help="Seeded defects.")
    ] = 12,
    speed: Annotated[
        float, typer.Option("--speed", min=0.01, max=1000.0, help="Agent speed in nm/s.")
    ] = 2.0,
    repair_success: Annotated[float, _prob("Chance that one repair works.")] = 0.8,
    drift: Annotated[float, _prob("Chance that an arrival lands 0.1 nm off.")] = 0.1,
    drop: Annotated[float, _prob("Chance that a frame is lost (each way).")] = 0.0,
    duplicate: Annotated[float, _prob("Chance that a frame is sent twice.")] = 0.0,
    ack_loss: Annotated[float, _prob("Chance that an ack is never sent.")] = 0.0,
    malformed: Annotated[float, _prob("Chance of a garbage frame before a real one.")] = 0.0,
    stuck: Annotated[float, _prob("Chance that a command hangs until halted.")] = 0.0,
    disconnect_rate: Annotated[
        float,
        typer.Option(
            "--disconnect-rate", min=0.0, max=1000.0, help="Link cuts per simulated second."
        ),
    ] = 0.0,
    disconnect_every: Annotated[
        float | None,
        typer.Option(
            "--disconnect-every", min=0.001, max=MAX_SECONDS, help="Cut the link every N seconds."
        ),
    ] = None,
    death_rate: Annotated[
        float,
        typer.Option("--death-rate", min=0.0, max=1000.0, help="Deaths per agent per second."),
    ] = 0.0,
    max_dead: Annotated[
        int, typer.Option("--max-dead", min=0, max=MAX_AGENTS, help="At most this many agents die.")
    ] = 0,
    heartbeat: Annotated[
        float,
        typer.Option("--heartbeat", min=0.001, max=3600.0, help="Heartbeat interval in seconds."),
    ] = 10.0,
    connect_attempts: Annotated[
        int | None,
        typer.Option(
            "--connect-attempts", min=1, max=1_000_000, help="Give up after N failed attempts."
        ),
    ] = None,
    surface_file: Annotated[
        Path | None,
        typer.Option(
            "--surface",
            help="Work on the surface in this JSON file (its size replaces --width-nm/--height-nm "
            "and --defects) and write every repair back to it, so an STM simulator following "
            "the file images the result.",
        ),
    ] = None,
    report_defects: Annotated[
        bool,
        typer.Option(
            "--report-defects/--no-report-defects",
            help="Report the surface's defects to the service on connect (off: the service "
            "learns of defects only from what it is sent, e.g. detections from a scan).",
        ),
    ] = True,
    reach_nm: Annotated[
        float,
        typer.Option(
            "--reach-nm",
            min=0.1,
            max=2.0,
            help="A repair or scan acts on the nearest defect within this distance of the agent.",
        ),
    ] = 0.2,
    json_out: output.JsonOption = False,
) -> None:
    """Simulate a repair swarm on a seeded surface, connected to the swarm service.

    Runs until --duration, Ctrl-C or SIGTERM; prints what really happened (the ground truth).
    """
    from atomlab.swarm.auth import client_token
    from atomlab.swarm.service_file import link_url

    loaded = output.state().loaded
    settings = loaded.settings
    seed = settings.sim.seed if seed is None else seed
    url = url or link_url(loaded)
    token = client_token(settings, "link")
    faults = FaultConfig(
        drop_prob=drop,
        duplicate_prob=duplicate,
        ack_loss_prob=ack_loss,
        malformed_prob=malformed,
        stuck_prob=stuck,
        disconnect_rate_per_s=disconnect_rate,
        disconnect_every_s=disconnect_every,
        agent_death_rate_per_s=death_rate,
        max_dead_agents=max_dead,
    )
    shared: Surface | None = None
    if surface_file is not None:
        if resume:
            raise InvalidInputError(
                "--resume continues a world from its ground-truth log and cannot take --surface; "
                "give one of them",
                field="surface",
                value=str(surface_file),
            )
        shared = load_surface(surface_file)
        width_nm = shared.width / UNITS_PER_NM
        height_nm = shared.height / UNITS_PER_NM
        defects = len(shared.defects)
    config = SwarmConfig(
        agents=agents,
        seed=seed,
        width_nm=width_nm,
        height_nm=height_nm,
        defects=defects,
        reach_units=max(1, round(reach_nm * UNITS_PER_NM)),
        speed_nm_s=speed,
        repair_success_prob=repair_success,
        drift_prob=drift,
        heartbeat_interval_s=heartbeat,
        faults=faults,
    )
    log_path = ground_truth or settings.home / "swarm-sim" / f"ground-truth-{seed}.jsonl"
    if resume:
        if not log_path.is_file():
            raise InvalidInputError(
                f"--resume: there is no ground-truth log at {log_path}; start without --resume "
                "or name the log with --ground-truth",
                field="ground_truth",
                value=str(log_path),
            )
        world = SwarmWorld.resume(config, log_path)
    else:
        world = SwarmWorld(config, surface=shared, ground_truth=GroundTruthLog(log_path))
    clock: Clock = SystemClock() if time_scale == 1.0 else ScaledClock(time_scale)
    simulator = SwarmSimulator(
        world, url=url, clock=clock, token=token, report_defects=report_defects
    )
    if not output.use_json(json_out):
        typer.echo(
            f"swarm simulator: {agents} agents, {len(world.surface.defects)} defects, seed {seed}; "
            f"connecting to {url} (Ctrl-C stops)",
            err=True,
        )
    summary, received = asyncio.run(_run(simulator, duration, connect_attempts, surface_file))
    payload = {
        **summary,
        "seed": seed,
        "connections": simulator.connections,
        "ground_truth": str(log_path),
        "faults": dict(world.faults.counts),
    }
    told = (
        f"simulated {summary['t_s']:.1f} s: {summary['repairs_succeeded']} repairs, "
        f"{summary['defects_remaining']} defects left, {summary['violations']} separation "
        f"violations (min {summary['min_separation_nm']} nm); ground truth in {log_path}"
    )
    # A stop by signal still says what happened (the error line is all a human sees).
    if received == signal.SIGTERM:
        raise TerminatedError(f"swarm simulator stopped on SIGTERM; {told}", **payload)
    if received == signal.SIGINT:
        raise InterruptedRunError(f"swarm simulator stopped on Ctrl-C; {told}", **payload)
    output.emit(payload, json_flag=json_out, human=told)


async def _run(
    simulator: SwarmSimulator,
    duration: float | None,
    connect_attempts: int | None,
    surface_file: Path | None = None,
) -> tuple[dict[str, Any], signal.Signals | None]:
    loop = asyncio.get_running_loop()
    received: list[signal.Signals] = []

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum)
        simulator.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    saving = (
        asyncio.create_task(_save_changes(simulator.world.surface, surface_file))
        if surface_file is not None
        else None
    )
    try:
        summary = await simulator.run(duration_s=duration, max_connect_attempts=connect_attempts)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        if saving is not None and surface_file is not None:
            saving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await saving
            save_surface(simulator.world.surface, surface_file)
    return summary.model_dump(), (received[0] if received else None)


async def _save_changes(surface: Surface, path: Path) -> None:
    """Write the surface back to ``path`` whenever a repair changed it."""
    written = surface.version
    while True:
        await asyncio.sleep(SURFACE_SAVE_S)
        if surface.version != written:
            written = surface.version
            save_surface(surface, path)
