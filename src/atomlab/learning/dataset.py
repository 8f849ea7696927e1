"""Decision datasets built from trajectory databases, in a standard episode format on disk.

A recorded run is one episode. Its decisions are rebuilt the way the operator made them: an
action the table knows (a guarded command such as a pulse, or a setpoint/gain change) is a
decision at its ``dt_s``; between actions, the operator kept scanning, one decision per window,
starting one window after the previous action's reply (``end_dt_s``). Each decision's observation
is :func:`~atomlab.learning.observation.observe` of the recording, exactly as in the environment.

On disk (``.npz``, or ``.h5`` when h5py is installed) the layout follows Minari's episodes:
``episode_<i>/observations`` (T+1), ``actions``, ``rewards``, ``terminations``, ``truncations``
(T each) and ``infos/<name>`` (T), plus a JSON ``metadata`` entry (features, action table, task,
sources, format version). Rewards are zero: the monitor records no task reward (tip health is
ground truth a real instrument never reports).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray

from atomlab import __version__
from atomlab.learning.actions import ACTIONS, KEEP_SCANNING, table_action_of
from atomlab.learning.atomic_file import atomic_output
from atomlab.learning.errors import DatasetError
from atomlab.learning.observation import (
    FEATURE_NAMES,
    REQUIRED_SIGNALS,
    REQUIRED_SPECS,
    EmptyWindowError,
    observe,
)
from atomlab.learning.recording import Recording
from atomlab.trajectory import ActionEvent, TrajectoryStore, open_store

DATASET_FORMAT: Final = "atomlab-learn-dataset"
DATASET_FORMAT_VERSION: Final = 1
MIN_ACTIONS: Final = 5
"""Fewer conditioning actions than this cannot teach a policy when to act."""
DatasetFormat = Literal["npz", "hdf5"]
SUFFIXES: Final[dict[str, DatasetFormat]] = {".npz": "npz", ".h5": "hdf5", ".hdf5": "hdf5"}


@dataclass
class EpisodeData:
    """One recorded run as decisions (Minari's EpisodeData fields)."""

    id: int
    run_name: str
    observations: NDArray[np.float32]
    actions: NDArray[np.int64]
    rewards: NDArray[np.float32]
    terminations: NDArray[np.bool_]
    truncations: NDArray[np.bool_]
    infos: dict[str, NDArray[Any]] = field(default_factory=dict)

    @property
    def total_steps(self) -> int:
        return int(self.actions.size)


@dataclass
class Dataset:
    episodes: list[EpisodeData]
    metadata: dict[str, Any]

    @property
    def total_steps(self) -> int:
        return sum(e.total_steps for e in self.episodes)

    def transitions(
        self, episodes: Iterable[int] | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Observations (without each episode's final one) and actions, concatenated."""
        chosen = [
            e for e in self.episodes if episodes is None or e.id in set(episodes)
        ] or self.episodes[:0]
        if not chosen:
            return np.zeros((0, len(FEATURE_NAMES)), np.float32), np.zeros(0, np.int64)
        obs = np.concatenate([e.observations[:-1] for e in chosen]).astype(np.float32)
        acts = np.concatenate([e.actions for e in chosen]).astype(np.int64)
        return obs, acts

    def action_counts(self) -> dict[str, int]:
        _, acts = self.transitions()
        counts = np.bincount(acts, minlength=len(ACTIONS))
        return {a.name: int(counts[a.index]) for a in ACTIONS if counts[a.index]}

    def sha256(self) -> str:
        """A hash of the content (arrays, features, action table), not of file bytes."""
        digest = hashlib.sha256()
        digest.update(json.dumps(_hashed_metadata(self.metadata), sort_keys=True).encode())
        for episode in self.episodes:
            digest.update(episode.run_name.encode())
            for array in (
                episode.observations,
                episode.actions,
                episode.rewards,
                episode.terminations,
                episode.truncations,
                *(episode.infos[k] for k in sorted(episode.infos)),
            ):
                contiguous = np.ascontiguousarray(array)
                digest.update(f"{contiguous.dtype.str}{contiguous.shape}".encode())
                digest.update(contiguous.tobytes())
        return digest.hexdigest()


def _hashed_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    keys = ("format", "format_version", "feature_names", "actions", "decision_interval_s")
    return {k: metadata.get(k) for k in keys}


# --- building from a trajectory database -------------------------------------------------------


@dataclass(frozen=True)
class _Decision:
    t_s: float
    action: int
    db_action_idx: int


def build_dataset(
    db_path: Path,
    *,
    run_names: Sequence[str] | None = None,
    decision_interval_s: float = 1.0,
    min_actions: int = MIN_ACTIONS,
    task: dict[str, Any] | None = None,
) -> Dataset:
    """Decisions of the named runs (every run when None) of the trajectory database."""
    if not (math.isfinite(decision_interval_s) and decision_interval_s > 0):
        raise DatasetError(
            f"decision_interval_s = {decision_interval_s!r} must be a positive number of seconds",
            field="decision_interval_s",
        )
    with open_store(db_path) as store:
        names = list(run_names) if run_names else [r.name for r in reversed(store.runs())]
        if not names:
            raise DatasetError(
                f"{str(db_path)!r} holds no runs; record some with `atomlab learn run` or "
                "`atomlab trajectory monitor run`",
                path=str(db_path),
            )
        episodes: list[EpisodeData] = []
        skipped: dict[str, int] = {"unmapped_actions": 0, "empty_windows": 0}
        for i, name in enumerate(names):
            episodes.append(_episode(store, name, i, decision_interval_s, skipped))
    dataset = Dataset(
        episodes=episodes,
        metadata={
            "format": DATASET_FORMAT,
            "format_version": DATASET_FORMAT_VERSION,
            "atomlab_version": __version__,
            "feature_names": list(FEATURE_NAMES),
            "actions": [a.to_dict() for a in ACTIONS],
            "decision_interval_s": decision_interval_s,
            "source": {"db_path": str(db_path), "run_names": names},
            "skipped": skipped,
            "rewards": "zero: the trajectory monitor records no task reward",
            "task": task or {},
        },
    )
    _require_actions(dataset, db_path, min_actions)
    return dataset


def _require_actions(dataset: Dataset, db_path: Path, min_actions: int) -> None:
    counts = dataset.action_counts()
    acted = sum(n for name, n in counts.items() if name != ACTIONS[KEEP_SCANNING].name)
    runs = ", ".join(e.run_name for e in dataset.episodes)
    if acted == 0:
        raise DatasetError(
            f"the trajectory database {str(db_path)!r} holds no operator actions the action "
            f"table knows (runs: {runs}); only keep-scanning would be learnt. Record runs in "
            "which the operator conditions the tip (pulses, tip shaper ...) through the guard, "
            "e.g. `atomlab learn run`",
            path=str(db_path),
            actions=0,
        )
    if acted < min_actions:
        raise DatasetError(
            f"the trajectory database {str(db_path)!r} holds {acted} operator action"
            f"{'s' if acted != 1 else ''} the action table knows (runs: {runs}); at least "
            f"{min_actions} are needed to learn when to act. Record longer or more runs",
            path=str(db_path),
            actions=acted,
            min_actions=min_actions,
        )


def _episode(
    store: TrajectoryStore, name: str, episode_id: int, window: float, skipped: dict[str, int]
) -> EpisodeData:
    recording = load_recording(store, name)
    actions = store.actions(name)
    decisions = _decisions(recording, actions, window, skipped)
    observations: list[NDArray[np.float32]] = []
    kept: list[_Decision] = []
    for decision in decisions:
        try:
            observations.append(observe(recording, decision.t_s, window_s=window))
        except EmptyWindowError:
            skipped["empty_windows"] += 1
            continue
        kept.append(decision)
    last_t = (kept[-1].t_s if kept else 0.0) + window
    try:
        observations.append(observe(recording, last_t, window_s=window))
    except EmptyWindowError:
        observations.append(
            observations[-1] if observations else np.zeros(len(FEATURE_NAMES), np.float32)
        )
    steps = len(kept)
    truncations = np.zeros(steps, dtype=np.bool_)
    if steps:
        truncations[-1] = True  # the recording ended; the task did not
    return EpisodeData(
        id=episode_id,
        run_name=name,
        observations=np.asarray(observations, dtype=np.float32).reshape(-1, len(FEATURE_NAMES)),
        actions=np.asarray([d.action for d in kept], dtype=np.int64),
        rewards=np.zeros(steps, dtype=np.float32),
        terminations=np.zeros(steps, dtype=np.bool_),
        truncations=truncations,
        infos={
            "dt_s": np.asarray([d.t_s for d in kept], dtype=np.float64),
            "db_action_idx": np.asarray([d.db_action_idx for d in kept], dtype=np.int64),
        },
    )


def load_recording(store: TrajectoryStore, name: str) -> Recording:
    """A run of the database as a :class:`Recording` (samples by label, commands)."""
    signal_labels = [c.label for c in store.catalog("signals", name)]
    spec_labels = [c.label for c in store.catalog("specs", name)]
    missing = [s for s in REQUIRED_SIGNALS if s not in signal_labels] + [
        s for s in REQUIRED_SPECS if s not in spec_labels
    ]
    if missing:
        raise DatasetError(
            f"run {name!r} did not record {', '.join(missing)}, which the observation is made "
            f"of (it recorded {', '.join(signal_labels + spec_labels)}); record with "
            f"--signals {','.join(REQUIRED_SIGNALS)} --specs {','.join(REQUIRED_SPECS)}",
            run_name=name,
            missing=missing,
        )
    recording = Recording(signal_labels, spec_labels)
    for signal_row, spec_row in zip(
        store.samples("signals", name), store.samples("specs", name), strict=False
    ):
        recording.add_sample(
            float(signal_row["dt_s"]),
            [signal_row[label] for label in signal_labels],
            [spec_row[label] for label in spec_labels],
        )
    for action in store.actions(name, kind="command"):
        recording.add_command(action.dt_s, action.command or action.spec_label, action.args or {})
    return recording


def _decisions(
    recording: Recording, actions: Sequence[ActionEvent], window: float, skipped: dict[str, int]
) -> list[_Decision]:
    """Table actions where the operator acted; keep-scanning every window in between."""
    acted: list[tuple[ActionEvent, int]] = []
    for event in actions:
        index = table_action_of(
            kind=event.kind,
            command=event.command,
            args=event.args,
            spec_label=event.spec_label,
            old_value=event.old_value,
            new_value=event.new_value,
        )
        if index is None:
            skipped["unmapped_actions"] += 1
        else:
            acted.append((event, index))
    acted.sort(key=lambda pair: pair[0].dt_s)
    decisions: list[_Decision] = []
    end = recording.end_dt_s
    t = window
    for event, index in acted:
        while t < event.dt_s - window / 2:
            decisions.append(_Decision(t, KEEP_SCANNING, -1))
            t += window
        decisions.append(_Decision(event.dt_s, index, event.action_idx))
        t = max(event.end_dt_s, event.dt_s) + window
    while t <= end + 1e-9:
        decisions.append(_Decision(t, KEEP_SCANNING, -1))
        t += window
    return decisions


# --- files -------------------------------------------------------------------------------------


def default_format() -> DatasetFormat:
    """HDF5 when h5py is installed (Minari's own format), else a NumPy ``.npz``."""
    return "hdf5" if importlib.util.find_spec("h5py") is not None else "npz"


def format_of(path: Path, requested: str | None = None) -> DatasetFormat:
    if requested is not None:
        if requested not in ("npz", "hdf5"):
            raise DatasetError(
                f"dataset format {requested!r} is not one of npz, hdf5", field="format"
            )
        fmt: DatasetFormat = "npz" if requested == "npz" else "hdf5"
    else:
        found = SUFFIXES.get(path.suffix.lower())
        if found is None:
            raise DatasetError(
                f"cannot tell the format of {str(path)!r} from its suffix; name it .npz or .h5 "
                "(or give --format)",
                path=str(path),
            )
        fmt = found
    if fmt == "hdf5" and importlib.util.find_spec("h5py") is None:
        raise DatasetError(
            "HDF5 needs the h5py package, which is not installed; write .npz instead",
            field="format",
        )
    return fmt


def write_dataset(dataset: Dataset, path: Path, *, fmt: str | None = None) -> Path:
    """Write ``dataset`` to ``path`` atomically; returns ``path``."""
    chosen = format_of(path, fmt)
    arrays: dict[str, NDArray[Any]] = {}
    for episode in dataset.episodes:
        prefix = f"episode_{episode.id}"
        for key in ("observations", "actions", "rewards", "terminations", "truncations"):
            arrays[f"{prefix}/{key}"] = getattr(episode, key)
        for key, value in episode.infos.items():
            arrays[f"{prefix}/infos/{key}"] = value
    metadata = {**dataset.metadata, "sha256": dataset.sha256(), "run_names": _run_names(dataset)}
    with atomic_output(path, what="dataset") as temp:
        if chosen == "npz":
            with temp.open("wb") as fh:
                arrays["metadata"] = np.asarray(json.dumps(metadata))
                savez: Any = np.savez_compressed  # numpy's stub types **kwds as bool
                savez(fh, **arrays)
        else:
            _write_hdf5(temp, dataset, metadata)
    return path


def _run_names(dataset: Dataset) -> dict[str, str]:
    return {str(e.id): e.run_name for e in dataset.episodes}


def _write_hdf5(path: Path, dataset: Dataset, metadata: dict[str, Any]) -> None:
    import h5py  # type: ignore[import-untyped]

    with h5py.File(path, "w") as h5:
        h5.attrs["metadata"] = json.dumps(metadata)
        h5.attrs["total_episodes"] = len(dataset.episodes)
        h5.attrs["total_steps"] = dataset.total_steps
        for episode in dataset.episodes:
            group = h5.create_group(f"episode_{episode.id}")
            group.attrs["id"] = episode.id
            group.attrs["total_steps"] = episode.total_steps
            group.attrs["run_name"] = episode.run_name
            for key in ("observations", "actions", "rewards", "terminations", "truncations"):
                group.create_dataset(key, data=getattr(episode, key))
            infos = group.create_group("infos")
            for key, value in episode.infos.items():
                infos.create_dataset(key, data=value)


def load_dataset(path: Path) -> Dataset:
    """Read a dataset written by :func:`write_dataset` (either format)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"no dataset file at {str(path)!r}", path=str(path))
    fmt = format_of(path)
    try:
        flat, metadata = _read_npz(path) if fmt == "npz" else _read_hdf5(path)
    except DatasetError:
        raise
    except Exception as exc:  # a damaged file: zip, HDF5 or JSON errors of every kind
        raise DatasetError(
            f"{str(path)!r} is not a readable dataset ({type(exc).__name__}: {exc})",
            path=str(path),
        ) from None
    if metadata.get("format") != DATASET_FORMAT:
        raise DatasetError(f"{str(path)!r} is not an atomlab learning dataset", path=str(path))
    if metadata.get("format_version") != DATASET_FORMAT_VERSION:
        raise DatasetError(
            f"{str(path)!r} is dataset format version {metadata.get('format_version')!r}; this "
            f"atomlab ({__version__}) reads version {DATASET_FORMAT_VERSION}. Rebuild it with "
            "`atomlab learn export-dataset`",
            path=str(path),
        )
    if metadata.get("feature_names") != list(FEATURE_NAMES):
        raise DatasetError(
            f"{str(path)!r} was built with other observation features; rebuild it with "
            "`atomlab learn export-dataset`",
            path=str(path),
        )
    names = metadata.get("run_names", {})
    episodes = []
    for key in sorted({k.split("/")[0] for k in flat}, key=lambda k: int(k.split("_")[1])):
        episode_id = int(key.split("_")[1])
        infos = {k.split("/", 2)[2]: v for k, v in flat.items() if k.startswith(f"{key}/infos/")}
        episodes.append(
            EpisodeData(
                id=episode_id,
                run_name=str(names.get(str(episode_id), "")),
                observations=flat[f"{key}/observations"].astype(np.float32),
                actions=flat[f"{key}/actions"].astype(np.int64),
                rewards=flat[f"{key}/rewards"].astype(np.float32),
                terminations=flat[f"{key}/terminations"].astype(np.bool_),
                truncations=flat[f"{key}/truncations"].astype(np.bool_),
                infos=infos,
            )
        )
    dataset = Dataset(episodes=episodes, metadata=metadata)
    stored = metadata.get("sha256")
    if stored is not None and stored != dataset.sha256():
        raise DatasetError(
            f"{str(path)!r} is damaged: its content does not match its recorded hash",
            path=str(path),
        )
    return dataset


def _read_npz(path: Path) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    with np.load(path, allow_pickle=False) as data:
        metadata = json.loads(str(data["metadata"]))
        flat = {k: data[k] for k in data.files if k != "metadata"}
    return flat, metadata


def _read_hdf5(path: Path) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    import h5py

    flat: dict[str, NDArray[Any]] = {}
    with h5py.File(path, "r") as h5:
        metadata = json.loads(str(h5.attrs["metadata"]))

        def visit(name: str, node: Any) -> None:
            if isinstance(node, h5py.Dataset):
                flat[name] = np.asarray(node[()])

        h5.visititems(visit)
    return flat, metadata
