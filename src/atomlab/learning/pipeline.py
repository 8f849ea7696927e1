"""The imitation pipeline as one tracked run: expert, collect, bc, finetune, compare (contract C3).

::

    from atomlab.learning import PipelineConfig, run_pipeline

    result = run_pipeline(PipelineConfig(preset="demo", seed=0, home=home), progress=view)
    result.comparison        # one row per policy: score, good_line_fraction, recovery_s, crashes
    read_metrics(result.run_dir)["bc/loss"]

Each step is a :class:`~atomlab.tracking.RunTracker` step (step X/N, ETA, telemetry, TensorBoard);
losses, returns and scores go to the run's metrics, the dataset, the models, the comparison table
and the plots to its artifacts. torch is imported here only when the run starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from atomlab.core.clock import utc_now_iso
from atomlab.core.errors import InvalidInputError, UnavailableError
from atomlab.core.logging import get_logger
from atomlab.core.settings import AtomlabSettings, load_settings
from atomlab.learning.dataset import (
    Dataset,
    build_dataset,
    default_format,
    load_dataset,
    write_dataset,
)
from atomlab.learning.episode import default_catalog
from atomlab.learning.evaluation import compare, evaluate, format_table, write_comparison
from atomlab.learning.expert import ScriptedExpert
from atomlab.learning.learn_extra import require_learn_extra
from atomlab.learning.policies import ExpertPolicy, NoOpPolicy, RandomPolicy
from atomlab.learning.presets import (
    COLLECT_OFFSET,
    FINETUNE_METHODS,
    FINETUNE_OFFSET,
    HELD_OUT_OFFSET,
    MAX_SEED,
    SELECTION_OFFSET,
    TRAIN_OFFSET,
    Preset,
    preset,
    seeds,
)
from atomlab.learning.task import EpisodeStats
from atomlab.tracking import (
    ProgressView,
    RunTracker,
    StepSpec,
    TensorBoardMirror,
    check_logdir,
)

if TYPE_CHECKING:
    import torch

    from atomlab.learning.bc import PolicyNetwork

PIPELINE: Final = "learn"
STEP_NAMES: Final = ("expert", "collect", "bc", "finetune", "compare")
DEVICES: Final = ("auto", "cpu", "cuda")
DEFAULT_THREADS: Final = 1
"""torch CPU threads: measured on a loaded two-core machine, 2 threads train about 10x slower
than 1 (they fight the other processes for the cores); the networks are far too small to gain."""
MAX_THREADS: Final = 256
SELECTION_MARGIN: Final = 0.02
"""The fine-tuned policy replaces BC only if it scores this much more on the selection episodes
(a smaller difference is within the noise of a few episodes)."""

_log = get_logger("atomlab.learning")


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """What to run: a preset's sizes, a seed, and where; everything else has a default."""

    preset: str | Preset = "demo"
    """A preset's name (``demo``, ``full``) or a :class:`~atomlab.learning.presets.Preset`."""
    seed: int = 0
    home: Path | None = None
    finetune: str | None = None
    """``dagger`` or ``ppo``; None takes the preset's choice (DAgger)."""
    device: str = "auto"
    threads: int = DEFAULT_THREADS
    dataset: Path | None = None
    """Train on this dataset file instead of collecting (the collect step is skipped)."""
    tensorboard: Path | None = None

    def __post_init__(self) -> None:
        if isinstance(self.preset, str):
            preset(self.preset)  # an unknown preset is exit 3, listing the presets
        if not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise InvalidInputError(
                f"seed {self.seed!r} must be a whole number 0..{MAX_SEED} (each seed owns a "
                "range of simulator seeds)",
                field="seed",
                value=self.seed,
            )
        if self.finetune is not None and self.finetune not in FINETUNE_METHODS:
            raise InvalidInputError(
                f"finetune {self.finetune!r} is not one of {', '.join(FINETUNE_METHODS)}",
                field="finetune",
                value=self.finetune,
            )
        if self.device not in DEVICES:
            raise InvalidInputError(
                f"device {self.device!r} is not one of {', '.join(DEVICES)}",
                field="device",
                value=self.device,
            )
        if not 1 <= self.threads <= MAX_THREADS:
            raise InvalidInputError(
                f"threads {self.threads!r} must be 1..{MAX_THREADS}", field="threads"
            )

    @property
    def resolved(self) -> Preset:
        chosen = preset(self.preset) if isinstance(self.preset, str) else self.preset
        if self.finetune is not None and self.finetune != chosen.finetune:
            chosen = dataclasses.replace(chosen, finetune=self.finetune)  # type: ignore[arg-type]
        return chosen

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.resolved.name,
            "seed": self.seed,
            "home": str(self.home) if self.home else None,
            "finetune": self.resolved.finetune,
            "device": self.device,
            "threads": self.threads,
            "dataset": str(self.dataset) if self.dataset else None,
        }


@dataclass
class PipelineResult:
    run_id: str
    run_dir: Path
    trajectory_db: Path | None
    trajectory_run_name: str | None
    dataset_path: Path
    models: dict[str, Path]
    comparison: list[dict[str, Any]]
    preset: str = "demo"
    seed: int = 0
    finetune: str = "dagger"
    device: str = "cpu"
    dataset_sha256: str = ""
    trajectory_run_names: list[str] = field(default_factory=list)
    artifacts: dict[str, Path] = field(default_factory=dict)
    collect: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def table(self) -> str:
        return format_table(self.comparison)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "preset": self.preset,
            "seed": self.seed,
            "finetune": self.finetune,
            "device": self.device,
            "trajectory_db": str(self.trajectory_db) if self.trajectory_db else None,
            "trajectory_run_name": self.trajectory_run_name,
            "trajectory_run_names": self.trajectory_run_names,
            "dataset_path": str(self.dataset_path),
            "dataset_sha256": self.dataset_sha256,
            "models": {k: str(v) for k, v in self.models.items()},
            "artifacts": {k: str(v) for k, v in self.artifacts.items()},
            "comparison": self.comparison,
            "collect": self.collect,
            "notes": self.notes,
            "duration_s": round(self.duration_s, 3),
        }


def steps_of(chosen: Preset) -> list[StepSpec]:
    expected = chosen.expected_s()
    finetune_units = (
        chosen.dagger.iterations * chosen.dagger.episodes_per_iteration
        if chosen.finetune == "dagger"
        else max(1, chosen.ppo.total_steps // chosen.ppo.n_steps)
    ) + 2 * chosen.selection_episodes
    return [
        StepSpec(
            name="expert",
            title="Expert operator",
            expected_s=expected["expert"],
            units=chosen.expert_episodes,
        ),
        StepSpec(
            name="collect",
            title="Collect over the Nanonis protocol",
            expected_s=expected["collect"],
            units=chosen.collect_episodes,
        ),
        StepSpec(
            name="bc", title="Behaviour cloning", expected_s=expected["bc"], units=chosen.bc.epochs
        ),
        StepSpec(
            name="finetune",
            title=f"Fine-tuning ({chosen.finetune})",
            expected_s=expected["finetune"],
            units=finetune_units,
        ),
        StepSpec(
            name="compare",
            title="Compare on held-out seeds",
            expected_s=expected["compare"],
            units=5 * chosen.eval_episodes,
        ),
    ]


def run_pipeline(
    config: PipelineConfig,
    *,
    progress: ProgressView | None = None,
    settings: AtomlabSettings | None = None,
) -> PipelineResult:
    """Run the five steps as one tracked run; returns where everything went and the table."""
    require_learn_extra()
    settings = settings or load_settings().settings
    home = config.home or settings.home
    chosen = config.resolved
    started = time.monotonic()
    mirrors = []
    logdir = config.tensorboard or settings.tracking.tensorboard_dir
    if logdir is not None:
        mirrors.append(TensorBoardMirror(logdir))
    if config.dataset is not None:
        load_dataset(config.dataset)  # a bad dataset file is refused before the run starts
    if logdir is not None:
        check_logdir(logdir)  # after every other check (it may create the folder), before the run
    tracker = RunTracker(
        PIPELINE,
        steps_of(chosen),
        home=home,
        settings=settings.tracking,
        progress=progress,
        mirrors=mirrors,
        tags={"preset": chosen.name, "seed": str(config.seed), "finetune": chosen.finetune},
    )
    with tracker as run:
        result = _Pipeline(run, config, chosen).run()
    result.duration_s = time.monotonic() - started
    return result


class _Pipeline:
    def __init__(self, run: RunTracker, config: PipelineConfig, chosen: Preset) -> None:
        self.tracker = run
        self.config = config
        self.preset = chosen
        self.task = chosen.task
        self.expert = ScriptedExpert()
        self.notes: list[str] = []
        self.models: dict[str, Path] = {}
        self.artifacts: dict[str, Path] = {}
        self.created_at = utc_now_iso()
        self._scratch = Path(tempfile.mkdtemp(prefix=".learn-", dir=run.run_dir))
        self.device = self._configure_torch()

    # --- torch ---------------------------------------------------------------------------

    def _configure_torch(self) -> torch.device:
        import torch

        from atomlab.learning.bc import pick_device

        torch.set_num_threads(self.config.threads)
        with contextlib.suppress(RuntimeError):  # already set or used in this process: keep it
            torch.set_num_interop_threads(1)
        torch.manual_seed(self.config.seed)
        device = pick_device(self.config.device)
        self.tracker.log_params(
            {
                "pipeline_config": self.config.to_dict(),
                "preset": self.preset.to_dict(),
                "torch": {
                    "version": torch.__version__,
                    "device": str(device),
                    "threads": torch.get_num_threads(),
                    "cuda_available": torch.cuda.is_available(),
                    "cuda_device": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
                },
            }
        )
        return device

    # --- the steps -----------------------------------------------------------------------

    def run(self) -> PipelineResult:
        try:
            self._expert()
            db, run_names, collected = self._collect()
            dataset = self._dataset(db, run_names)
            net, bc_history = self._bc(dataset)
            tuned, finetune_history = self._finetune(net, dataset)
            rows = self._compare(net, tuned)
            self._plots(rows, bc_history, finetune_history)
        finally:
            for leftover in self._scratch.iterdir():
                leftover.unlink(missing_ok=True)
            self._scratch.rmdir()
        return PipelineResult(
            run_id=self.tracker.run_id,
            run_dir=self.tracker.run_dir,
            trajectory_db=db,
            trajectory_run_name=run_names[0] if run_names else None,
            trajectory_run_names=run_names,
            dataset_path=self.artifacts["dataset"],
            dataset_sha256=dataset.sha256(),
            models=dict(self.models),
            comparison=rows,
            preset=self.preset.name,
            seed=self.config.seed,
            finetune=self.preset.finetune,
            device=str(self.device),
            artifacts=dict(self.artifacts),
            collect=collected,
            notes=self.notes,
        )

    def _expert(self) -> None:
        with self.tracker.step("expert"):
            row, _ = evaluate(
                "expert",
                ExpertPolicy(self.expert),
                task=self.task,
                seeds=seeds(self.config.seed, TRAIN_OFFSET, self.preset.expert_episodes),
                on_episode=self._advance_episode("expert"),
            )
            self.tracker.log_metrics(
                {
                    "expert/score": row["score"],
                    "expert/good_line_fraction": row["good_line_fraction"],
                },
                step=0,
            )
            self._save_model("expert", expert=self.expert, config=self.expert.to_dict())

    def _collect(self) -> tuple[Path | None, list[str], list[dict[str, Any]]]:
        if self.config.dataset is not None:
            self.tracker.skip_step("collect", f"reusing the dataset {self.config.dataset}")
            return None, [], []
        from atomlab.learning.collect import collect_episodes

        db = self.tracker.run_dir / "trajectories.sqlite"
        names = [f"{self.tracker.run_id}-ep{i:02d}" for i in range(self.preset.collect_episodes)]
        counter = iter(range(10**9))

        def on_episode(episode: Any) -> None:
            step = next(counter)
            self.tracker.log_metrics(
                {
                    "collect/expert_score": episode.stats.score,
                    "collect/decisions": float(len(episode.decisions)),
                    "collect/actions": float(sum(1 for _, a in episode.decisions if a)),
                },
                step=step,
            )
            self.tracker.advance()

        with self.tracker.step("collect"):
            collected = collect_episodes(
                task=self.task,
                expert=self.expert,
                seeds=seeds(self.config.seed, COLLECT_OFFSET, self.preset.collect_episodes),
                run_names=names,
                episode_s=self.preset.collect_episode_s,
                parallel=self.preset.collect_parallel,
                db_path=db,
                work_dir=self.tracker.run_dir / "collect",
                catalog=default_catalog(),
                on_episode=on_episode,
            )
        return db, names, [c.to_dict() for c in collected]

    def _dataset(self, db: Path | None, run_names: list[str]) -> Dataset:
        if self.config.dataset is not None:
            dataset = load_dataset(self.config.dataset)
        else:
            assert db is not None
            dataset = build_dataset(
                db,
                run_names=run_names,
                decision_interval_s=self.task.decision_interval_s,
                min_actions=self.preset.min_actions,
                task=self.task.to_dict(),
            )
        suffix = ".h5" if default_format() == "hdf5" else ".npz"
        path = write_dataset(dataset, self._scratch / f"dataset{suffix}")
        self.artifacts["dataset"] = self.tracker.log_artifact(path, kind="dataset")
        return dataset

    def _bc(self, dataset: Dataset) -> tuple[PolicyNetwork, list[dict[str, float]]]:
        from atomlab.learning.actions import ACTIONS
        from atomlab.learning.bc import train_bc

        ids = [e.id for e in dataset.episodes]
        valid_ids = ids[-1:] if len(ids) >= 2 else []
        train_obs, train_act = dataset.transitions([i for i in ids if i not in valid_ids])
        valid = dataset.transitions(valid_ids) if valid_ids else None
        with self.tracker.step("bc"):
            self.tracker.log_params(
                {
                    "dataset": {
                        "sha256": dataset.sha256(),
                        "episodes": len(ids),
                        "steps": dataset.total_steps,
                        "actions": dataset.action_counts(),
                        "valid_episodes": valid_ids,
                    }
                }
            )

            def on_epoch(epoch: int, entry: dict[str, float]) -> None:
                self.tracker.log_metrics({f"bc/{k}": v for k, v in entry.items()}, step=epoch)
                self.tracker.advance()

            net, history = train_bc(
                train_obs,
                train_act,
                config=self.preset.bc,
                n_actions=len(ACTIONS),
                device=self.device,
                valid=valid,
                on_epoch=on_epoch,
            )
            self._save_model(
                "bc", net=net, config={"bc": self.preset.bc.to_dict()}, dataset=dataset
            )
        return net, history

    def _finetune(
        self, net: PolicyNetwork, dataset: Dataset
    ) -> tuple[PolicyNetwork, list[dict[str, float]]]:
        from atomlab.learning.bc import TorchPolicy

        method = self.preset.finetune
        train_seeds = seeds(self.config.seed, FINETUNE_OFFSET, 3_000)
        with self.tracker.step("finetune"):
            if method == "dagger":
                tuned, history, config = self._dagger(net, dataset, train_seeds)
            else:
                tuned, history, config = self._ppo(net, train_seeds)
            selection = seeds(self.config.seed, SELECTION_OFFSET, self.preset.selection_episodes)
            before = evaluate(
                "bc",
                TorchPolicy(net),
                task=self.task,
                seeds=selection,
                on_episode=self._advance_episode(),
            )[0]
            after = evaluate(
                method,
                TorchPolicy(tuned, name=method),
                task=self.task,
                seeds=selection,
                on_episode=self._advance_episode(),
            )[0]
            self.tracker.log_metrics(
                {
                    "finetune/selection_score_bc": before["score"],
                    "finetune/selection_score_tuned": after["score"],
                },
                step=0,
            )
            improved = after["score"] >= before["score"] + SELECTION_MARGIN
            self.tracker.log_metric("finetune/selected_tuned", float(improved), step=0)
            if not improved:
                self.notes.append(
                    f"{method} scored {after['score']:.3f} on the selection episodes, BC "
                    f"{before['score']:.3f}: not better by {SELECTION_MARGIN}, so the fine-tuned "
                    "model is the BC policy"
                )
                tuned = net
            self._save_model("finetuned", net=tuned, config=config, dataset=dataset, kind=method)
        return tuned, history

    def _dagger(
        self, net: PolicyNetwork, dataset: Dataset, train_seeds: Sequence[int]
    ) -> tuple[PolicyNetwork, list[dict[str, float]], dict[str, Any]]:
        from atomlab.learning.dagger import dagger

        obs, act = dataset.transitions()

        def on_iteration(iteration: int, entry: dict[str, float]) -> None:
            self.tracker.log_metrics(
                {f"finetune/{k}": v for k, v in entry.items() if k != "iteration"},
                step=iteration,
            )

        tuned, history = dagger(
            net,
            obs,
            act,
            task=self.task,
            seeds=train_seeds,
            expert=self.expert,
            bc=self.preset.bc,
            config=self.preset.dagger,
            device=self.device,
            on_iteration=on_iteration,
            on_episode=self.tracker.advance,
        )
        config = {"bc": self.preset.bc.to_dict(), "dagger": self.preset.dagger.to_dict()}
        return tuned, history, config

    def _ppo(
        self, net: PolicyNetwork, train_seeds: Sequence[int]
    ) -> tuple[PolicyNetwork, list[dict[str, float]], dict[str, Any]]:
        from atomlab.learning.ppo import ppo_finetune

        def on_update(update: int, entry: dict[str, float]) -> None:
            finite = {f"finetune/{k}": v for k, v in entry.items() if math.isfinite(v)}
            finite.pop("finetune/update", None)
            if finite:
                self.tracker.log_metrics(finite, step=update)
            self.tracker.advance()

        tuned, history = ppo_finetune(
            net,
            task=self.task,
            seeds=train_seeds,
            config=self.preset.ppo,
            device=self.device,
            on_update=on_update,
        )
        config = {"bc": self.preset.bc.to_dict(), "ppo": self.preset.ppo.to_dict()}
        return tuned, history, config

    def _compare(self, net: PolicyNetwork, tuned: PolicyNetwork) -> list[dict[str, Any]]:
        from atomlab.learning.bc import TorchPolicy

        with self.tracker.step("compare"):
            rows = compare(
                {
                    "expert": ExpertPolicy(self.expert),
                    "bc": TorchPolicy(net),
                    "finetuned": TorchPolicy(tuned, name="finetuned"),
                    "noop": NoOpPolicy(),
                    "random": RandomPolicy(),
                },
                task=self.task,
                seeds=seeds(self.config.seed, HELD_OUT_OFFSET, self.preset.eval_episodes),
                on_episode=self._advance_episode(),
            )
            for row in rows:
                row["method"] = self.preset.finetune if row["policy"] == "finetuned" else ""
                self.tracker.log_metrics(
                    {
                        f"compare/{row['policy']}/score": row["score"],
                        f"compare/{row['policy']}/good_line_fraction": row["good_line_fraction"],
                        f"compare/{row['policy']}/crashes": float(row["crashes"]),
                    },
                    step=0,
                )
            for key, path in write_comparison(rows, self._scratch).items():
                self.artifacts[f"comparison_{key}"] = self.tracker.log_artifact(path, kind="table")
        return rows

    def _plots(
        self,
        rows: list[dict[str, Any]],
        bc_history: list[dict[str, float]],
        finetune_history: list[dict[str, float]],
    ) -> None:
        try:
            from atomlab.learning.plots import plot_comparison, plot_training

            comparison = plot_comparison(rows, self._scratch / "comparison.png")
            training = plot_training(
                bc_history,
                finetune_history,
                self._scratch / "training.png",
                finetune=self.preset.finetune,
            )
        except UnavailableError as exc:
            self.notes.append(f"no plots: {exc.message}")
            return
        self.artifacts["comparison_plot"] = self.tracker.log_artifact(comparison, kind="plot")
        self.artifacts["training_plot"] = self.tracker.log_artifact(training, kind="plot")

    # --- helpers -------------------------------------------------------------------------

    def _advance_episode(self, metric: str | None = None) -> Callable[[str, EpisodeStats], None]:
        counter = iter(range(10**9))

        def on_episode(name: str, stats: EpisodeStats) -> None:
            if metric is not None:
                self.tracker.log_metric(f"{metric}/episode_score", stats.score, step=next(counter))
            self.tracker.advance()

        return on_episode

    def _save_model(
        self,
        name: str,
        *,
        config: dict[str, Any],
        net: PolicyNetwork | None = None,
        expert: ScriptedExpert | None = None,
        dataset: Dataset | None = None,
        kind: str | None = None,
    ) -> None:
        from atomlab.learning.models import save_model

        path = save_model(
            self._scratch / f"{name}.pt",
            kind=kind or name,
            task=self.task,
            config={**config, "pipeline": self.config.to_dict()},
            created_at=self.created_at,
            dataset_sha256=dataset.sha256() if dataset is not None else None,
            net=net,
            expert=expert,
        )
        self.models[name] = self.tracker.log_artifact(path, name=f"{name}.pt", kind="model")
