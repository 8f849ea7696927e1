"""What one dashboard reads and how it listens: built from the settings, checked before serving."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from atomlab.core.errors import PolicyRefusedError
from atomlab.core.settings import AtomlabSettings, SwarmZone

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})
DEFAULT_SAMPLE_TICK_S = 0.1
DEFAULT_SLOW_TICK_S = 1.0
DEFAULT_SWARM_TICK_S = 0.5
DEFAULT_SCAN_TICK_S = 2.0
DEFAULT_STRIP_WINDOW_S = 30.0
MAX_STRIP_POINTS = 6000
"""Points kept per strip-chart trace in the browser (60 s at 100 Hz): SVG lines stay fast."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the loopback names."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_of(header: str) -> str:
    """The host part of a ``Host`` header: ``[::1]:8090`` -> ``::1``, ``a:80`` -> ``a``."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def check_host(host: str, *, allow_remote: bool) -> None:
    """Refuse to listen beyond this machine unless asked to (exit 2, naming the fix).

    The dashboard has no login: anyone who can reach the port reads the whole data home.
    """
    if is_loopback(host) or allow_remote:
        return
    raise PolicyRefusedError(
        f"refusing to serve the dashboard on {host!r}: it has no login, so anyone who can reach "
        "that address could read every run, recording and swarm record. Serve on 127.0.0.1 and "
        "reach it through an SSH tunnel (ssh -L 8090:127.0.0.1:8090 HOST), or pass "
        "--allow-remote (dashboard.allow_remote) if the network is yours",
        field="host",
        value=host,
    )


@dataclass(frozen=True)
class DashboardConfig:
    """Every input of one dashboard app; :func:`from_settings` builds it the CLI's way."""

    home: Path
    trajectory_db: Path
    swarm_db_url: str
    instrument: tuple[str, int] | None = None
    swarm_bounds_nm: tuple[tuple[float, float], tuple[float, float]] = ((0.0, 20.0), (0.0, 20.0))
    swarm_no_go_zones: tuple[dict[str, tuple[float, float]], ...] = ()
    stale_after_s: float = 15.0
    allow_remote: bool = False
    """Accept requests whatever their ``Host`` header names (else only loopback names)."""
    sample_tick_s: float = DEFAULT_SAMPLE_TICK_S
    slow_tick_s: float = DEFAULT_SLOW_TICK_S
    swarm_tick_s: float = DEFAULT_SWARM_TICK_S
    scan_tick_s: float = DEFAULT_SCAN_TICK_S
    strip_window_s: float = DEFAULT_STRIP_WINDOW_S


def from_settings(
    settings: AtomlabSettings,
    *,
    trajectory_db: Path | None = None,
    swarm_db_url: str | None = None,
    instrument: tuple[str, int] | None = None,
    scan_image: bool | None = None,
) -> DashboardConfig:
    """A config from the settings; explicit arguments (the CLI's flags) win."""
    from atomlab.trajectory import default_config_path, defaults_from_settings, load_staged

    section = settings.dashboard
    home = settings.home
    if trajectory_db is None:
        trajectory_db = section.trajectory_db
    if trajectory_db is None:
        staged = load_staged(
            default_config_path(settings), defaults=defaults_from_settings(settings)
        )
        trajectory_db = staged.resolved_db_path(home)
    want_scan = section.scan_image if scan_image is None else scan_image
    if instrument is None and want_scan:
        instrument = (
            section.instrument_host or settings.instrument.host,
            section.instrument_port or settings.instrument.port,
        )
    return DashboardConfig(
        home=home,
        trajectory_db=trajectory_db,
        # The swarm service's default database (atomlab.swarm.default_db_url), named here so
        # that building a config does not import the whole service stack.
        swarm_db_url=swarm_db_url or settings.swarm.db_url or f"sqlite:///{home / 'swarm.sqlite'}",
        instrument=instrument if want_scan else None,
        swarm_bounds_nm=(settings.swarm.bounds_x_nm, settings.swarm.bounds_y_nm),
        swarm_no_go_zones=tuple(_zone(z) for z in settings.swarm.no_go_zones),
        stale_after_s=settings.tracking.stale_after_s,
        allow_remote=section.allow_remote,
    )


def _zone(zone: SwarmZone) -> dict[str, tuple[float, float]]:
    return {"x": zone.x, "y": zone.y}
