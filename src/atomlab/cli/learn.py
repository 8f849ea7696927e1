"""``atomlab learn``: the imitation pipeline, model evaluation and dataset export.

A thin skin over :mod:`atomlab.learning`; torch and friends are imported only when a command
that needs them runs (never when the CLI starts).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from atomlab.cli import output
from atomlab.core.errors import AtomlabError, InterruptedRunError, TerminatedError

app = typer.Typer(
    name="learn",
    help="Learn an STM operator's behaviour from recorded trajectories (imitation pipeline).",
    no_args_is_help=True,
)

PresetOption = Annotated[str, typer.Option("--preset", help="demo (about 90 s) or full.")]
SeedOption = Annotated[
    int, typer.Option("--seed", help="Pipeline seed, 0-9999 (same seed, same numbers).")
]


@app.command("run")
def run_command(
    preset: PresetOption = "demo",
    seed: SeedOption = 0,
    home: Annotated[
        Path | None, typer.Option("--home", help="Data home (default: the global one).")
    ] = None,
    finetune: Annotated[
        str | None, typer.Option("--finetune", help="dagger (the preset's) or ppo.")
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda.")
    ] = "auto",
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads (default 1).")] = 1,
    dataset: Annotated[
        Path | None,
        typer.Option("--dataset", help="Train on this dataset file; skips the collect step."),
    ] = None,
    tensorboard: Annotated[
        Path | None,
        typer.Option("--tensorboard", help="Mirror metrics to this TensorBoard logdir."),
    ] = None,
    json_out: output.JsonOption = False,
) -> None:
    """Run expert, collect, bc, finetune and compare as one tracked run."""
    from atomlab.learning import PipelineConfig, run_pipeline
    from atomlab.tracking import RunCancelled, auto_view

    json_mode = output.use_json(json_out)
    settings = output.state().loaded.settings
    config = PipelineConfig(
        preset=preset,
        seed=seed,
        home=home or settings.home,
        finetune=finetune,
        device=device,
        threads=threads,
        dataset=dataset,
        tensorboard=tensorboard,
    )
    view = auto_view(json_mode=json_mode, interval_s=settings.tracking.progress_interval_s)
    try:
        result = run_pipeline(config, progress=view, settings=settings)
    except RunCancelled as exc:
        raise _cancelled(exc.signum) from None
    payload = result.to_dict()

    def human(console: Console) -> None:
        console.print(
            f"run {result.run_id} ({result.preset}, seed {result.seed}) "
            f"in {result.duration_s:.1f} s on {result.device}"
        )
        console.print(result.table, markup=False, highlight=False)
        for note in result.notes:
            console.print(f"note: {note}")
        console.print(f"models: {', '.join(str(p) for p in result.models.values())}")
        console.print(f"dataset: {result.dataset_path}")
        if result.trajectory_db is not None:
            console.print(f"trajectories: {result.trajectory_db}")

    output.emit(payload, json_flag=json_out, human=human)


@app.command("eval")
def eval_command(
    model: Annotated[Path, typer.Argument(help="A model file (.pt) from `atomlab learn run`.")],
    episodes: Annotated[
        int, typer.Option("--episodes", min=1, max=1000, help="Held-out episodes.")
    ] = 10,
    seed: SeedOption = 0,
    json_out: output.JsonOption = False,
) -> None:
    """Evaluate a saved policy closed-loop on held-out seeds of the world it was trained in."""
    from atomlab.learning.evaluation import evaluate, format_table
    from atomlab.learning.presets import HELD_OUT_OFFSET, seeds

    saved = _load_model(model)
    _check_seed(seed)
    row, stats = evaluate(
        saved.kind,
        saved.policy(),
        task=saved.task,
        seeds=seeds(seed, HELD_OUT_OFFSET, episodes),
    )
    payload = {
        "model": str(model),
        **saved.describe(),
        "result": row,
        "episodes": [s.to_dict() for s in stats],
    }

    def human(console: Console) -> None:
        console.print(
            f"{model}: {saved.kind} (format {saved.format_version}, atomlab "
            f"{saved.atomlab_version}, dataset {str(saved.dataset_sha256)[:12]})"
        )
        console.print(format_table([row]), markup=False, highlight=False)

    output.emit(payload, json_flag=json_out, human=human)


@app.command("export-dataset")
def export_dataset_command(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Dataset file (.npz, or .h5 with h5py).")
    ],
    db: Annotated[
        Path | None,
        typer.Option("--db-path", help="Trajectory database (default: the trajectory settings)."),
    ] = None,
    run_name: Annotated[
        list[str] | None,
        typer.Option("--run-name", help="A run to include; repeat (default: every run)."),
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="npz or hdf5 (default: the suffix).")
    ] = None,
    decision_interval: Annotated[
        float, typer.Option("--decision-interval-s", help="Seconds per decision window.")
    ] = 1.0,
    min_actions: Annotated[
        int, typer.Option("--min-actions", min=1, help="Refuse fewer operator actions than this.")
    ] = 5,
    json_out: output.JsonOption = False,
) -> None:
    """Build decisions from a trajectory database and write them as Minari-style episodes."""
    from atomlab.learning.dataset import build_dataset, format_of, write_dataset

    settings = output.state().loaded.settings
    db_path = db or settings.trajectory.db_path or settings.home / "trajectories.sqlite"
    chosen = format_of(out, fmt)  # a bad suffix or format is refused before any work
    dataset = build_dataset(
        db_path,
        run_names=run_name,
        decision_interval_s=decision_interval,
        min_actions=min_actions,
    )
    write_dataset(dataset, out, fmt=chosen)
    payload = {
        "path": str(out),
        "format": chosen,
        "sha256": dataset.sha256(),
        "episodes": len(dataset.episodes),
        "steps": dataset.total_steps,
        "actions": dataset.action_counts(),
        "skipped": dataset.metadata["skipped"],
        "run_names": [e.run_name for e in dataset.episodes],
    }
    output.emit(
        payload,
        json_flag=json_out,
        human=f"wrote {out} ({chosen}): {len(dataset.episodes)} episodes, "
        f"{dataset.total_steps} decisions, actions {dataset.action_counts()}",
    )


@app.command("presets")
def presets_command(json_out: output.JsonOption = False) -> None:
    """The pipeline presets and their sizes."""
    from atomlab.learning.presets import PRESETS

    payload = {"presets": {name: p.to_dict() for name, p in PRESETS.items()}}
    human = "\n".join(f"{name}: {p.description}" for name, p in PRESETS.items())
    output.emit(payload, json_flag=json_out, human=human)


def _load_model(path: Path) -> Any:
    from atomlab.learning.learn_extra import require_learn_extra

    require_learn_extra(("torch",))
    from atomlab.learning.models import load_model

    return load_model(path)


def _check_seed(seed: int) -> None:
    from atomlab.core.errors import InvalidInputError
    from atomlab.learning.presets import MAX_SEED

    if not 0 <= seed <= MAX_SEED:
        raise InvalidInputError(f"--seed {seed} must be 0..{MAX_SEED}", field="seed", value=seed)


def _cancelled(signum: int) -> AtomlabError:
    message = f"learning pipeline cancelled by {signal.Signals(signum).name}"
    if signum == signal.SIGINT:
        return InterruptedRunError(message)
    return TerminatedError(message)
