"""Simulators: the world atomlab acts on when no real instrument or swarm is attached.

The STM simulator speaks the Nanonis TCP protocol over a seeded :mod:`atomlab.surface`:

::

    from atomlab.sim import start_simulator_in_thread
    with start_simulator_in_thread(seed=0, ports=[0]) as sim:
        port = sim.ports[0]      # connect any Nanonis TCP client to 127.0.0.1:port
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atomlab.sim.event_log import EventLogWriter, read_event_log
    from atomlab.sim.loopback import LoopbackNanonis
    from atomlab.sim.spm import (
        DEFAULT_HOST,
        DEFAULT_PORTS,
        SimulatorThread,
        SpmSimulator,
        start_simulator_in_thread,
    )
    from atomlab.sim.stm_commands import StmCommands
    from atomlab.sim.stm_physics import (
        CRASH_GAP_M,
        DEFAULT_LOOP_RATE_HZ,
        Disturbances,
        SimEvent,
        StmPhysics,
    )
    from atomlab.sim.stm_routes import CommandRefusedError
    from atomlab.sim.stm_signals import DEFAULT_SLOTS, MEASUREMENT_CHANNELS, SIGNAL_NAMES
    from atomlab.sim.stm_tunnel import BARRIER_EV, KAPPA_PER_M, LocalDos

# Where each public name lives: a module loads when one of its names is first used (PEP 562), so
# `atomlab sim swarm` does not load the STM simulator, nor `atomlab sim --help` either.
_HOMES: dict[str, str] = {
    "EventLogWriter": "event_log",
    "read_event_log": "event_log",
    "LoopbackNanonis": "loopback",
    "DEFAULT_HOST": "spm",
    "DEFAULT_PORTS": "spm",
    "SimulatorThread": "spm",
    "SpmSimulator": "spm",
    "start_simulator_in_thread": "spm",
    "StmCommands": "stm_commands",
    "CRASH_GAP_M": "stm_physics",
    "DEFAULT_LOOP_RATE_HZ": "stm_physics",
    "Disturbances": "stm_physics",
    "SimEvent": "stm_physics",
    "StmPhysics": "stm_physics",
    "CommandRefusedError": "stm_routes",
    "DEFAULT_SLOTS": "stm_signals",
    "MEASUREMENT_CHANNELS": "stm_signals",
    "SIGNAL_NAMES": "stm_signals",
    "BARRIER_EV": "stm_tunnel",
    "KAPPA_PER_M": "stm_tunnel",
    "LocalDos": "stm_tunnel",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'atomlab.sim' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"atomlab.sim.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


__all__ = [
    "BARRIER_EV",
    "CRASH_GAP_M",
    "DEFAULT_HOST",
    "DEFAULT_LOOP_RATE_HZ",
    "DEFAULT_PORTS",
    "DEFAULT_SLOTS",
    "KAPPA_PER_M",
    "MEASUREMENT_CHANNELS",
    "SIGNAL_NAMES",
    "CommandRefusedError",
    "Disturbances",
    "EventLogWriter",
    "LocalDos",
    "LoopbackNanonis",
    "SimEvent",
    "SimulatorThread",
    "SpmSimulator",
    "StmCommands",
    "StmPhysics",
    "read_event_log",
    "start_simulator_in_thread",
]
