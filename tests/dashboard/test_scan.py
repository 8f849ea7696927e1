"""The scan image source: the latest frame from the simulator over the Nanonis protocol, picked
by channel name; a missing instrument costs one attempt per retry period, not one per page."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from atomlab.core.clock import FakeClock
from atomlab.core.errors import UnavailableError
from atomlab.dashboard.scan import ScanSource, channel_unit
from atomlab.instrument import NanonisClient
from atomlab.sim import Disturbances, start_simulator_in_thread


def test_the_latest_frame_is_the_topography_in_nm_and_grows_as_the_scan_goes_on() -> None:
    sim_clock = FakeClock(start=0.0)
    with start_simulator_in_thread(
        seed=0, ports=[0], disturbances=Disturbances.none(), clock=sim_clock
    ) as sim:
        port = sim.ports[0]
        with NanonisClient("127.0.0.1", port) as client:
            client.call("Scan.Action", {"action": 0, "direction_up": 1})
            names = list(client.call("Signals.InSlotsGet")["names"])  # buffer channels: slots
            recorded = list(client.call("Scan.BufferGet")["channels"])
        source = ScanSource("127.0.0.1", port, clock=FakeClock(), min_interval_s=0.0)
        first = source.latest()
        sim_clock.advance(30.0)  # the simulated tip scans a few dozen lines meanwhile
        later = source.latest()
        source.close()
    z_channels = [names[i] for i in recorded if names[i].upper().startswith("Z")]
    assert z_channels, "the simulator records a Z channel"
    assert (later.channel, later.unit) == channel_unit(z_channels[0])
    assert later.image.ndim == 2
    assert later.width_nm == pytest.approx(20.0, rel=1e-3)
    assert later.scanning
    assert 0.0 < later.scanned_fraction < 1.0
    assert later.scanned_fraction > first.scanned_fraction
    assert later.digest != first.digest


@pytest.fixture
def closing_server() -> Iterator[tuple[int, list[int]]]:
    """A TCP port that accepts connections and closes them at once, counting them."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()
            if not stop.is_set():
                accepted.append(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = server.getsockname()[1]
    yield port, accepted
    stop.set()
    socket.create_connection(("127.0.0.1", port)).close()  # wakes the blocked accept()
    thread.join(5)
    server.close()


def test_a_broken_instrument_is_asked_again_only_after_the_retry_period(
    closing_server: tuple[int, list[int]],
) -> None:
    port, accepted = closing_server
    clock = FakeClock()
    source = ScanSource("127.0.0.1", port, clock=clock, retry_after_s=10.0)
    with pytest.raises(UnavailableError, match="--no-instrument") as first:
        source.latest()
    tries = len(accepted)
    assert tries >= 1
    with pytest.raises(UnavailableError) as again:
        source.latest()
    assert again.value is first.value and len(accepted) == tries  # nothing was sent
    assert source.status()["error"] == first.value.message
    clock.advance(10.5)
    with pytest.raises(UnavailableError):
        source.latest()
    assert len(accepted) > tries


def test_channel_names_split_into_label_and_unit() -> None:
    assert channel_unit("Z (m)") == ("Z", "m")
    assert channel_unit("Input 3 (V)") == ("Input 3", "V")
    assert channel_unit("Phase") == ("Phase", "")
