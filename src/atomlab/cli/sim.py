"""``atomlab sim``: run the simulators (one command per simulated device)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from atomlab.cli import output
from atomlab.cli.sim_swarm import swarm
from atomlab.core.errors import InterruptedRunError, InvalidInputError, TerminatedError
from atomlab.surface import SurfaceFollower, load_surface

if TYPE_CHECKING:  # the STM simulator loads when `sim spm` runs, not for `sim --help`/`swarm`
    from atomlab.sim import Disturbances, EventLogWriter, SpmSimulator

SURFACE_POLL_S = 0.2
"""How often ``sim spm --surface`` looks for changes another process wrote to the file."""

app = typer.Typer(
    name="sim",
    help="Run simulated instruments.",
    no_args_is_help=True,
)

app.command("swarm")(swarm)

MIN_LOOP_RATE_HZ, MAX_LOOP_RATE_HZ = 100.0, 20_000.0
"""The range ``Util.RTFreqSet`` accepts."""
EVENT_LOG_INTERVAL_S = 0.05
"""How often ``--events-file`` gets the simulator's new events."""


@app.command("spm")
def spm(
    host: Annotated[
        str | None, typer.Option("--host", help="Address to listen on (default 127.0.0.1).")
    ] = None,
    port: Annotated[
        list[int] | None,
        typer.Option(
            "--port",
            help="Port to listen on; repeat for several (default 6501-6504, 0 = any free port).",
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the surface and the disturbances.")
    ] = None,
    no_disturbances: Annotated[
        bool,
        typer.Option(
            "--no-disturbances", help="No tip changes and no drift (tip crashes still happen)."
        ),
    ] = False,
    tip_change_rate: Annotated[
        float | None,
        typer.Option(
            "--tip-change-rate",
            help="Mean tip changes per second (default 1/240: one per 4 min).",
        ),
    ] = None,
    loop_rate: Annotated[
        float | None,
        typer.Option(
            "--loop-rate",
            help="Control-loop rate in Hz, 100-20000 (default 1000, as Util.RTFreqSet).",
        ),
    ] = None,
    events_file: Annotated[
        Path | None,
        typer.Option(
            "--events-file",
            help="Append every tip change, crash and restoration to this JSON-lines file "
            "(the simulator's ground truth, for scripted experts and scoring).",
        ),
    ] = None,
    session_dir: Annotated[
        Path | None,
        typer.Option(
            "--session-dir",
            help="Where saved scans (.sxm) and spectra (.dat) go (default <home>/sim-session).",
        ),
    ] = None,
    surface: Annotated[
        Path | None,
        typer.Option(
            "--surface",
            help="Image the surface in this JSON file (e.g. one the swarm simulator shares) and "
            "follow its changes, such as repairs, while running.",
        ),
    ] = None,
    json_out: output.JsonOption = False,
) -> None:
    """Run the STM simulator (Nanonis TCP protocol) until Ctrl-C or SIGTERM."""
    from atomlab.sim import SpmSimulator

    loaded = output.state().loaded.settings
    settings = loaded.sim
    session = session_dir or loaded.home / SESSION_DIR_NAME
    simulator = SpmSimulator(
        seed=settings.seed if seed is None else seed,
        surface=load_surface(surface) if surface is not None else None,
        host=host or settings.host,
        ports=port or settings.ports,
        disturbances=_disturbances(no_disturbances, tip_change_rate),
        loop_rate_hz=_loop_rate(loop_rate),
        session_dir=session,
    )  # checks the host and the ports before anything is created
    follower = SurfaceFollower(simulator.surface, surface) if surface is not None else None
    received = asyncio.run(_serve(simulator, json_out, events_file, follower, session))
    if received == signal.SIGTERM:
        raise TerminatedError("STM simulator stopped on SIGTERM", ports=simulator.ports)
    raise InterruptedRunError("STM simulator stopped on Ctrl-C", ports=simulator.ports)


SESSION_DIR_NAME = "sim-session"


def _session_dir(path: Path) -> Path:
    """The session folder must be a folder we can create and write (checked before listening)."""
    shown = str(path)[:200]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidInputError(
            f"--session-dir {shown!r} cannot be used: {reason}; give a writable folder",
            field="session_dir",
        ) from None
    if not path.is_dir():
        raise InvalidInputError(
            f"--session-dir {shown!r} is a file; give a folder", field="session_dir"
        )
    return path


def _disturbances(no_disturbances: bool, tip_change_rate: float | None) -> Disturbances | None:
    from atomlab.sim import Disturbances

    if tip_change_rate is None:
        return Disturbances.none() if no_disturbances else None
    if no_disturbances:
        raise InvalidInputError(
            "--tip-change-rate and --no-disturbances contradict each other; give one of them",
            field="tip_change_rate",
        )
    if not (math.isfinite(tip_change_rate) and 0.0 <= tip_change_rate <= 1000.0):
        raise InvalidInputError(
            f"--tip-change-rate {tip_change_rate!r} must be 0..1000 tip changes per second "
            "(e.g. 0.1 for one every 10 s)",
            field="tip_change_rate",
            value=tip_change_rate,
        )
    return Disturbances(tip_change_rate_per_s=tip_change_rate)


def _loop_rate(loop_rate: float | None) -> float:
    from atomlab.sim import DEFAULT_LOOP_RATE_HZ

    if loop_rate is None:
        return DEFAULT_LOOP_RATE_HZ
    if not (math.isfinite(loop_rate) and MIN_LOOP_RATE_HZ <= loop_rate <= MAX_LOOP_RATE_HZ):
        raise InvalidInputError(
            f"--loop-rate {loop_rate!r} must be {MIN_LOOP_RATE_HZ:g}..{MAX_LOOP_RATE_HZ:g} Hz",
            field="loop_rate",
            value=loop_rate,
        )
    return loop_rate


def _open_event_log(simulator: SpmSimulator, path: Path | None) -> EventLogWriter | None:
    from atomlab.sim import EventLogWriter

    if path is None:
        return None
    try:
        return EventLogWriter(simulator.physics, path)
    except OSError as exc:
        raise InvalidInputError(
            f"--events-file {str(path)!r} cannot be written: {exc.strerror or exc}; "
            "give a file in a writable folder",
            field="events_file",
            value=str(path),
        ) from None


async def _write_events(log: EventLogWriter) -> None:
    while True:
        await asyncio.sleep(EVENT_LOG_INTERVAL_S)
        log.flush()


async def _serve(
    simulator: SpmSimulator,
    json_out: bool,
    events_file: Path | None = None,
    follower: SurfaceFollower | None = None,
    session_dir: Path | None = None,
) -> signal.Signals:
    """Serve until SIGINT or SIGTERM; return the signal that stopped it."""
    from atomlab.sim import Disturbances

    event_log = _open_event_log(simulator, events_file)
    if session_dir is not None:
        try:
            _session_dir(session_dir)  # created only once every other input is checked
        except InvalidInputError:
            if event_log is not None:
                event_log.close()
            raise
    writer = asyncio.create_task(_write_events(event_log)) if event_log is not None else None
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[signal.Signals] = loop.create_future()
    handled = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, _resolve, stop, signum)
            handled.append(signum)
        except NotImplementedError:  # Windows: Ctrl-C arrives as KeyboardInterrupt (exit 130)
            pass
    try:
        await simulator.start()
        where = ", ".join(f"{simulator.host}:{p}" for p in simulator.ports)
        output.emit(
            {
                "event": "listening",
                "host": simulator.host,
                "ports": simulator.ports,
                "seed": simulator.seed,
                "defects": len(simulator.surface.defects),
                "disturbances": simulator.physics.disturbances != Disturbances.none(),
                "tip_change_rate_per_s": simulator.physics.disturbances.tip_change_rate_per_s,
                "loop_rate_hz": simulator.physics.loop_rate_hz,
                "session_dir": str(simulator.commands.session_dir),
            },
            json_flag=json_out,
            human=f"STM simulator (seed {simulator.seed}) listening on {where}; "
            "Ctrl-C or SIGTERM stops it",
        )
        following = asyncio.create_task(_follow(follower)) if follower is not None else None
        try:
            return await stop
        finally:
            if following is not None:
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await following
    finally:
        await simulator.stop()
        for signum in handled:
            loop.remove_signal_handler(signum)
        if writer is not None and event_log is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            event_log.close()


def _resolve(stop: asyncio.Future[signal.Signals], signum: signal.Signals) -> None:
    if not stop.done():
        stop.set_result(signum)


async def _follow(follower: SurfaceFollower) -> None:
    """Apply the surface file's changes (repairs made by another process) as they come."""
    while True:
        await asyncio.sleep(SURFACE_POLL_S)
        follower.poll()
