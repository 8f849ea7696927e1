"""Simulators: the world atomlab acts on when no real instrument or swarm is attached.

The STM simulator speaks the Nanonis TCP protocol over a seeded :mod:`atomlab.surface`:

::

    from atomlab.sim import start_simulator_in_thread
    with start_simulator_in_thread(seed=0, ports=[0]) as sim:
        port = sim.ports[0]      # connect any Nanonis TCP client to 127.0.0.1:port
"""

from atomlab.sim.event_log import EventLogWriter, read_event_log
from atomlab.sim.loopback import LoopbackNanonis
from atomlab.sim.spm import (
    DEFAULT_HOST,
    DEFAULT_PORTS,
    SimulatorThread,
    SpmSimulator,
    start_simulator_in_thread,
)
from atomlab.sim.stm_commands import CommandRefusedError, StmCommands
from atomlab.sim.stm_physics import (
    CRASH_GAP_M,
    DEFAULT_LOOP_RATE_HZ,
    KAPPA_PER_M,
    SIGNAL_NAMES,
    Disturbances,
    SimEvent,
    StmPhysics,
)

__all__ = [
    "CRASH_GAP_M",
    "DEFAULT_HOST",
    "DEFAULT_LOOP_RATE_HZ",
    "DEFAULT_PORTS",
    "KAPPA_PER_M",
    "SIGNAL_NAMES",
    "CommandRefusedError",
    "Disturbances",
    "EventLogWriter",
    "LoopbackNanonis",
    "SimEvent",
    "SimulatorThread",
    "SpmSimulator",
    "StmCommands",
    "StmPhysics",
    "read_event_log",
    "start_simulator_in_thread",
]
