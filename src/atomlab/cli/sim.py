"""``atomlab sim``: run the simulators (one command per simulated device)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Annotated

import typer

from atomlab.cli import output
from atomlab.cli.sim_swarm import swarm
from atomlab.core.errors import InterruptedRunError, TerminatedError
from atomlab.sim import Disturbances, SpmSimulator
from atomlab.surface import SurfaceFollower, load_surface

SURFACE_POLL_S = 0.2
"""How often ``sim spm --surface`` looks for changes another process wrote to the file."""

app = typer.Typer(
    name="sim",
    help="Run simulated instruments.",
    no_args_is_help=True,
)

app.command("swarm")(swarm)


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
    settings = output.state().loaded.settings.sim
    simulator = SpmSimulator(
        seed=settings.seed if seed is None else seed,
        surface=load_surface(surface) if surface is not None else None,
        host=host or settings.host,
        ports=port or settings.ports,
        disturbances=Disturbances.none() if no_disturbances else None,
    )
    follower = SurfaceFollower(simulator.surface, surface) if surface is not None else None
    received = asyncio.run(_serve(simulator, json_out, follower))
    if received == signal.SIGTERM:
        raise TerminatedError("STM simulator stopped on SIGTERM", ports=simulator.ports)
    raise InterruptedRunError("STM simulator stopped on Ctrl-C", ports=simulator.ports)


async def _serve(
    simulator: SpmSimulator, json_out: bool, follower: SurfaceFollower | None = None
) -> signal.Signals:
    """Serve until SIGINT or SIGTERM; return the signal that stopped it."""
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


async def _follow(follower: SurfaceFollower) -> None:
    """Apply the surface file's changes (repairs made by another process) as they come."""
    while True:
        await asyncio.sleep(SURFACE_POLL_S)
        follower.poll()


def _resolve(stop: asyncio.Future[signal.Signals], signum: signal.Signals) -> None:
    if not stop.done():
        stop.set_result(signum)
