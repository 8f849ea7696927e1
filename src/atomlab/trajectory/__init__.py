"""Record every signal and every operator action of an SPM run into SQLite, and read them back.

::

    from atomlab.trajectory import open_store

    with open_store(db_path) as store:               # read-only; fine while a run records
        for action in store.actions():              # the latest run's inferred actions
            window = store.signal_window(action.window_start_dt_s, action.window_end_dt_s)
            window.values["Tunnel Current"], window.complete

Recording: :class:`Monitor` polls a :class:`Source` (:class:`InstrumentSource` on a Nanonis
client) with a staged :class:`MonitorConfig`; see docs/trajectory.md.
"""

from __future__ import annotations

from atomlab.trajectory.actions import ActionDetector, GuardCommand, OwnWrites, values_equal
from atomlab.trajectory.config import (
    DEFAULT_ACTION_WINDOW_S,
    DEFAULT_INTERVAL_S,
    DEFAULT_ROTATE_ENTRIES,
    DEFAULT_SIGNALS,
    DEFAULT_SPECS,
    MonitorConfig,
    build_config,
    clear_staged,
    clear_staged_run_name,
    default_config_path,
    defaults_from_settings,
    load_staged,
    save_staged,
)
from atomlab.trajectory.metrics import MonitorMetrics
from atomlab.trajectory.monitor import Monitor, RunSummary, Source
from atomlab.trajectory.records import (
    ActionEvent,
    ChannelInfo,
    MissedTicks,
    MonitorError,
    Record,
    RunStatus,
    Sample,
    Value,
)
from atomlab.trajectory.source import InstrumentSource, catalog_listing, check_labels
from atomlab.trajectory.store import (
    CHECKPOINT_INTERVAL_S,
    LEASE_TIMEOUT_S,
    RunInfo,
    SignalWindow,
    TrajectoryStore,
    mark_crashed_runs,
    open_store,
)

__all__ = [
    "CHECKPOINT_INTERVAL_S",
    "DEFAULT_ACTION_WINDOW_S",
    "DEFAULT_INTERVAL_S",
    "DEFAULT_ROTATE_ENTRIES",
    "DEFAULT_SIGNALS",
    "DEFAULT_SPECS",
    "LEASE_TIMEOUT_S",
    "ActionDetector",
    "ActionEvent",
    "ChannelInfo",
    "GuardCommand",
    "InstrumentSource",
    "MissedTicks",
    "Monitor",
    "MonitorConfig",
    "MonitorError",
    "MonitorMetrics",
    "OwnWrites",
    "Record",
    "RunInfo",
    "RunStatus",
    "RunSummary",
    "Sample",
    "SignalWindow",
    "Source",
    "TrajectoryStore",
    "Value",
    "build_config",
    "catalog_listing",
    "check_labels",
    "clear_staged",
    "clear_staged_run_name",
    "default_config_path",
    "defaults_from_settings",
    "load_staged",
    "mark_crashed_runs",
    "open_store",
    "save_staged",
    "values_equal",
]
