"""Benchmark: the STM simulator's own costs, in-process (no sockets).

Run: ``uv run python benchmarks/sim.py [--calls N]``.

1. Request handling: ``StmCommands.dispatch`` (decode, physics catch-up, handler, encode) against
   the bare codec (``decode_args`` + ``encode_reply``) for the same request: the simulator's
   overhead on top of the protocol.
2. Physics: control-loop steps per second, idle and while scanning, against the loop rate the
   simulator must keep up with in real time (1 kHz by default): the real-time headroom.
3. Spectroscopy: a 201-point bias spectrum with the lock-in (``BiasSpectr.Start``) and a
   128-point Z spectrum, wall time against the simulated time the sweep takes.

The socket-level rate (target >= 5,000 calls/s) is measured by ``benchmarks/instrument.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from atomlab.core.clock import FakeClock
from atomlab.instrument.protocol import decode_args, encode_reply, encode_request
from atomlab.sim import Disturbances, SpmSimulator, StmPhysics
from atomlab.surface import Surface

REQUESTS = {
    "Bias.Get": {},
    "Current.Get": {},
    "Signals.ValsGet": {"indexes": list(range(32)), "wait": 0},
}


def codec_floor(name: str, body: bytes, reply: dict[str, object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        decode_args(name, body)
        encode_reply(name, reply)
    return calls / (time.perf_counter() - start)


def dispatch_rate(sim: SpmSimulator, name: str, body: bytes, calls: int) -> float:
    async def run() -> float:
        dispatch = sim.commands.dispatch
        start = time.perf_counter()
        for _ in range(calls):
            await dispatch(name, body)
        return calls / (time.perf_counter() - start)

    return asyncio.run(run())


def steps_per_s(scanning: bool, seconds: float) -> float:
    physics = StmPhysics(Surface.generate(0), seed=0, disturbances=Disturbances())
    if scanning:
        physics.scan.buffer.pixels, physics.scan.buffer.lines = 256, 256
        physics.start_scan(direction_up=True)
    start = time.perf_counter()
    physics.advance_to(seconds)
    return seconds * physics.loop_rate_hz / (time.perf_counter() - start)


def spectrum_speed(kind: str) -> tuple[float, float]:
    """(wall seconds, simulated seconds) of one spectrum on a fake clock."""
    clock = FakeClock()
    sim = SpmSimulator(seed=0, ports=[], clock=clock, tick_interval_s=None)
    handlers = sim.commands.routes

    def call(name: str, args: dict[str, object]) -> object:
        reply = handlers[name].handler(args)
        return asyncio.run(reply) if asyncio.iscoroutine(reply) else reply

    if kind == "bias":
        call("BiasSpectr.ChsSet", {"channel_indexes": [0, 86]})
        call("LockIn.ModOnOffSet", {"modulator_number": 1, "on": 1})
        call(
            "BiasSpectr.PropsSet",
            {"save_all": 0, "number_of_sweeps": 1, "backward_sweep": 2, "number_of_points": 201,
             "z_offset_m": 0.0, "autosave": 2, "show_save_dialog": 2},
        )  # fmt: skip
        start_args: dict[str, object] = {"get_data": 1, "save_base_name": ""}
        name = "BiasSpectr.Start"
    else:
        call(
            "ZSpectr.PropsSet",
            {"backward_sweep": 2, "number_of_points": 128, "number_of_sweeps": 1, "autosave": 2,
             "show_save_dialog": 2, "save_all": 2},
        )  # fmt: skip
        start_args = {"get_data": 1, "save_base_name": ""}
        name = "ZSpectr.Start"
    before = clock.monotonic()
    start = time.perf_counter()
    call(name, start_args)
    return time.perf_counter() - start, clock.monotonic() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    sim = SpmSimulator(seed=0, ports=[], clock=FakeClock(), tick_interval_s=None)
    print(f"requests per measurement: {args.calls} (in-process, no sockets)")
    for name, request in REQUESTS.items():
        body = encode_request(name, request)[40:]
        reply = sim.commands.routes[name].handler(decode_args(name, body))
        if asyncio.iscoroutine(reply):
            reply = asyncio.run(reply)
        # best of three, interleaved, so load from other processes hits both alike
        floor = rate = 0.0
        for _ in range(3):
            floor = max(floor, codec_floor(name, body, reply, args.calls))
            rate = max(rate, dispatch_rate(sim, name, body, args.calls))
        print(
            f"{name:16s} codec alone {floor:10,.0f}/s  simulator {rate:10,.0f}/s  "
            f"ratio {rate / floor:5.2f}x"
        )
    required = StmPhysics(Surface.generate(0)).loop_rate_hz
    for scanning in (False, True):
        rate = steps_per_s(scanning, seconds=10.0)
        label = "scanning" if scanning else "idle    "
        print(
            f"physics {label} {rate:10,.0f} steps/s  needed {required:,.0f}/s  "
            f"headroom {rate / required:5.1f}x"
        )
    for kind in ("bias", "z"):
        wall, simulated = min(spectrum_speed(kind) for _ in range(3))
        print(
            f"spectrum {kind:4s}   {wall * 1e3:8.1f} ms wall for {simulated:6.2f} s simulated  "
            f"{simulated / wall:7.1f}x real time"
        )


if __name__ == "__main__":
    main()
