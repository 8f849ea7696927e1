"""``atomlab engine``: run LLM batch pipelines, resume them, and look after the response cache."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from atomlab.cli import output
from atomlab.core.errors import AtomlabError, InvalidInputError
from atomlab.core.logging import configure_logging, get_logger
from atomlab.core.paths import input_file, output_file
from atomlab.core.settings import AtomlabSettings, load_settings
from atomlab.engine import (
    CACHE_MODES,
    CacheReport,
    EngineMetrics,
    FailedItem,
    PipelineRunner,
    ResponseCache,
    RunOptions,
    RunPaths,
    check_cache_location,
    describe_run,
    list_pipelines,
    load_pipeline,
    migrate_file,
    register_run,
    run_blocking,
    sample_input,
    write_atomically,
)
from atomlab.llm import LlmQueue, make_provider

app = typer.Typer(
    help="Run LLM batch pipelines with cache, resume and metrics.", no_args_is_help=True
)
cache_app = typer.Typer(help="Check, repair and measure the response cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")

CacheDirOption = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir", help="Cache folder (default: engine.cache_dir or HOME/engine/cache)."
    ),
]


def _settings(llm: dict[str, Any], engine: dict[str, Any]) -> AtomlabSettings:
    state = output.state()
    overrides = dict(state.overrides)
    overrides["llm"] = {**overrides.get("llm", {}), **llm}
    overrides["engine"] = {**overrides.get("engine", {}), **engine}
    return load_settings(config_path=state.config_path, overrides=overrides).settings


def _cache_dir(settings: AtomlabSettings, override: Path | None) -> Path:
    return override or settings.engine.cache_dir or settings.home / "engine" / "cache"


@app.command("pipelines")
def pipelines(json_out: output.JsonOption = False) -> None:
    """List the shipped pipelines."""
    rows = list_pipelines()

    def human(console: Console) -> None:
        table = Table("pipeline", "description", title="shipped pipelines")
        for row in rows:
            table.add_row(row["name"], row["description"])
        console.print(table)
        console.print("sample input: atomlab engine sample NAME --output items.jsonl")

    output.emit({"pipelines": rows}, json_flag=json_out, human=human)


@app.command("sample")
def sample(
    pipeline: Annotated[str, typer.Argument(help="A shipped pipeline name.")],
    to: Annotated[Path, typer.Option("--output", "-o", help="Where to write the sample JSONL.")],
    json_out: output.JsonOption = False,
) -> None:
    """Write the sample input shipped with PIPELINE (to try the pipeline at once)."""
    load_pipeline(pipeline)  # a clear error for unknown names
    output_file(to, option="--output")
    body = sample_input(pipeline).read_bytes()
    to.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(to, body)
    lines = sum(1 for line in body.decode("utf-8").splitlines() if line.strip())
    output.emit(
        {"pipeline": pipeline, "output": str(to), "items": lines},
        json_flag=json_out,
        human=f"wrote {lines} sample items of {pipeline} to {to}",
    )


def _register(home: Path, output_path: Path, input_path: Path, pipeline: str) -> None:
    """Note the run in <home>/engine/runs.jsonl (the dashboard lists runs from it); a home that
    cannot be written costs a warning, never the run."""
    try:
        register_run(home, output=output_path, input_path=input_path, pipeline=pipeline)
    except OSError as exc:
        get_logger(__name__).warning("engine.register_failed", home=str(home), error=str(exc))


@app.command("run")
def run(
    pipeline: Annotated[str, typer.Argument(help="A shipped pipeline name or a pipeline YAML.")],
    input_path: Annotated[
        Path, typer.Option("--input", "-i", help="Input JSONL, one item a line.")
    ],
    output_path: Annotated[Path, typer.Option("--output", "-o", help="Output JSONL.")],
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the interrupted run writing OUTPUT.")
    ] = False,
    strict: Annotated[
        bool | None,
        typer.Option("--strict/--no-strict", help="Stop at the first failed stage (exit 3)."),
    ] = None,
    provider: Annotated[
        str | None, typer.Option("--provider", help="offline, replay, gemini, openai or auto.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model id (llm.model).")] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", min=1, help="Provider calls at once.")
    ] = None,
    cache_dir: CacheDirOption = None,
    cache_mode: Annotated[
        str | None, typer.Option("--cache-mode", help="read-write, read-only, refresh or off.")
    ] = None,
    queue: Annotated[
        bool | None,
        typer.Option("--queue/--no-queue", help="Route calls through the LLM queue."),
    ] = None,
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help="Progress bar (TTY only).")
    ] = None,
    json_logs: Annotated[
        bool, typer.Option("--json-logs", help="Log JSON lines on stderr.")
    ] = False,
    trace_ids: Annotated[
        bool, typer.Option("--trace-ids", help="Print the request ids of failed items.")
    ] = False,
    json_out: output.JsonOption = False,
) -> None:
    """Run PIPELINE over --input into --output (in input order, resumable, exit 130 on Ctrl-C)."""
    settings = _settings(
        {"provider": provider, "model": model},
        {"concurrency": concurrency, "strict": strict, "queue": queue, "cache_mode": cache_mode},
    )
    if json_logs:
        configure_logging(settings.log.level, "json")
    loaded = load_pipeline(pipeline)
    metrics = EngineMetrics()
    backend = make_provider(settings.llm, home=settings.home)
    llm_queue = (
        LlmQueue.from_settings(
            backend,
            settings.llm,
            concurrency=settings.engine.concurrency,
            registry=metrics.metrics.registry,
        )
        if settings.engine.queue
        else None
    )
    mode = settings.engine.cache_mode
    cache = (
        None
        if mode == "off"
        else ResponseCache(_cache_dir(settings, cache_dir), mode=mode, on_event=metrics.cache_event)
    )
    options = RunOptions(
        concurrency=settings.engine.concurrency,
        max_items_in_flight=settings.engine.max_items_in_flight,
        strict=settings.engine.strict,
        resume=resume,
    )
    show = progress if progress is not None else _progress_allowed(json_logs, json_out, settings)
    with _progress_bar(show, loaded.name) as on_progress:
        runner = PipelineRunner(
            loaded,
            backend,
            queue=llm_queue,
            cache=cache,
            metrics=metrics,
            options=options,
            on_progress=on_progress,
            on_start=lambda: _register(settings.home, output_path, input_path, loaded.name),
        )
        try:
            summary = run_blocking(runner, input_path, output_path)
        except AtomlabError:
            if trace_ids:
                _print_trace_ids(runner.summary.failed)
            raise
    if trace_ids:
        _print_trace_ids(summary.failed)
    payload = _counts_renamed(summary.to_dict(), "items_ok")
    paths = RunPaths(output_path)
    payload["rejects"] = str(paths.rejects) if summary.rejected else None
    payload["metrics_file"] = str(paths.metrics)
    if llm_queue is not None:
        stats = llm_queue.stats()
        payload["queue"] = {"retries": stats.retries, "cost_usd": stats.cost_usd}
    human = (
        f"{loaded.name} ({_answered_by(summary.provider, summary.model)}): "
        f"{summary.ok} ok, {summary.rejected} rejected of {summary.items} items "
        f"→ {output_path} ({_count(summary.calls, 'call')}, {summary.cache_hits} from cache"
        + (f", {summary.journal_hits} from the journal" if summary.journal_hits else "")
        + (f", {summary.resumed_items} already done" if summary.resumed_items else "")
        + ")"
        + (f"\nrejected items: {paths.rejects}" if summary.rejected else "")
    )
    output.emit(payload, json_flag=json_out, human=human)


def _answered_by(provider: str, model: str) -> str:
    """Who produced the answers, said plainly: offline answers are no model's."""
    if provider == "offline":
        return (
            f"offline provider {model}: answers generated locally from each prompt, not by an "
            "LLM; set GEMINI_API_KEY, OPENAI_API_KEY or llm.base_url for real answers"
        )
    if provider == "replay":
        return f"replayed cassettes of model {model}"
    return f"{provider} model {model}"


def _counts_renamed(payload: dict[str, Any], name: str) -> dict[str, Any]:
    """``payload`` with its ``ok`` count renamed: ``ok`` is the envelope's success flag."""
    renamed = {name: payload["ok"]}
    renamed.update((key, value) for key, value in payload.items() if key != "ok")
    return renamed


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _progress_allowed(json_logs: bool, json_out: bool, settings: AtomlabSettings) -> bool:
    return (
        sys.stderr.isatty()
        and not json_logs
        and not output.use_json(json_out)
        and settings.log.format != "json"
    )


@contextmanager
def _progress_bar(show: bool, label: str) -> Iterator[Callable[[int, int], None]]:
    if not show:
        yield lambda _done, _total: None
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _print_trace_ids(failed: list[FailedItem]) -> None:
    for failure in failed:
        sys.stderr.write(
            f"failed item {failure.item_id} stage {failure.stage}: "
            f"request_id={failure.request_id or '-'} ({failure.error_type})\n"
        )
    sys.stderr.flush()


@app.command("status")
def status(
    output_path: Annotated[Path, typer.Option("--output", "-o", help="The run's output JSONL.")],
    json_out: output.JsonOption = False,
) -> None:
    """Show how far the run writing --output got and what it was started with."""
    output_file(output_path, option="--output")
    state = describe_run(output_path)
    human = (
        f"{state['output']}: {state['status']}, {state['items_finished']} items finished "
        f"({state['ok']} ok, {state['rejected']} rejected)"
    )
    output.emit(_counts_renamed(state, "items_ok"), json_flag=json_out, human=human)


@app.command("migrate")
def migrate(
    source: Annotated[str, typer.Option("--from", help="Schema version of the input (1.0).")],
    target: Annotated[str, typer.Option("--to", help="Schema version to write (1.1).")],
    input_path: Annotated[Path, typer.Option("--input", "-i", help="Input JSONL.")],
    output_path: Annotated[Path, typer.Option("--output", "-o", help="Output JSONL.")],
    json_out: output.JsonOption = False,
) -> None:
    """Migrate an output file between schema versions (deterministic, order and meta kept)."""
    input_file(input_path, option="--input", what="JSONL file")
    output_file(output_path, option="--output")
    if input_path.resolve() == output_path.resolve():
        raise InvalidInputError(
            "--input and --output are the same file; write the migration to a new file",
            field="--output",
            value=str(output_path),
        )
    count = migrate_file(input_path, output_path, source=source, target=target)
    output.emit(
        {"input": str(input_path), "output": str(output_path), "records": count, "to": target},
        json_flag=json_out,
        human=f"migrated {count} records from {source} to {target} → {output_path}",
    )


def _listed(keys: list[str], shown: int = 5) -> str:
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def _open_cache(cache_dir: Path | None, *, writable: bool) -> ResponseCache:
    settings = _settings({}, {})
    directory = _cache_dir(settings, cache_dir)
    check_cache_location(directory, create=False)
    return ResponseCache(directory, mode="read-write" if writable else "read-only")


def _findings_line(report: CacheReport, *, shown: int = 5) -> str:
    """``3 checksum_mismatch, 1 manifest_missing`` and the first few paths."""
    kinds = ", ".join(f"{count} {kind}" for kind, count in report.kinds.items())
    listed = [f"{Path(f.path).name} ({f.kind})" for f in report.damage[:shown]]
    more = f" and {len(report.damage) - shown} more" if len(report.damage) > shown else ""
    return f"{kinds}: {', '.join(listed)}{more}" if listed else kinds


@cache_app.command("validate")
def cache_validate(
    cache_dir: CacheDirOption = None,
    fix: Annotated[
        bool, typer.Option("--fix", help="Repair: remove damaged files, rebuild the index.")
    ] = False,
    json_out: output.JsonOption = False,
) -> None:
    """Check every entry, schema file and index row; exit 3 while damage remains."""
    cache = _open_cache(cache_dir, writable=fix)
    report = cache.validate(fix=fix)
    payload = {"directory": str(cache.directory), **_counts_renamed(report.to_dict(), "entries_ok")}
    remaining = report.unfixed if fix else report.damage
    if remaining:
        what = "could not be repaired" if fix else "damage found"
        hint = (
            "see each finding's detail for what to do"
            if fix
            else "run 'atomlab engine cache validate --fix' to repair it (damaged entries are "
            "removed and fetched again by the next run)"
        )
        raise InvalidInputError(
            f"cache {cache.directory}: {what}: {_findings_line(report)}; {hint}", **payload
        )
    notes = f", {_findings_line(report)}" if report.findings else ""
    output.emit(
        payload,
        json_flag=json_out,
        human=(
            f"{report.entries} entries, {report.ok} ok, manifest {report.manifest}{notes}"
            + (f"; repaired: {report.purged} removed, {report.indexed} indexed" if fix else "")
            + f" ({cache.directory})"
        ),
    )


@cache_app.command("purge")
def cache_purge(
    cache_dir: CacheDirOption = None,
    stage: Annotated[
        str | None, typer.Option("--stage", help="Only the entries of this stage.")
    ] = None,
    corrupt: Annotated[
        bool, typer.Option("--corrupt", help="Only damaged entries (same as validate --fix).")
    ] = False,
    json_out: output.JsonOption = False,
) -> None:
    """Delete cache entries: all of them, one stage's, or only the damaged ones."""
    cache = _open_cache(cache_dir, writable=True)
    try:
        removed = cache.validate(fix=True).purged if corrupt else cache.purge(stage=stage)
    finally:
        cache.close()
    output.emit(
        {"directory": str(cache.directory), "purged": removed, "stage": stage},
        json_flag=json_out,
        human=f"purged {removed} entries from {cache.directory}",
    )


@cache_app.command("stats")
def cache_stats(cache_dir: CacheDirOption = None, json_out: output.JsonOption = False) -> None:
    """Entries and bytes in the cache, overall and per stage."""
    cache = _open_cache(cache_dir, writable=False)
    try:
        stats = cache.stats()
    finally:
        cache.close()
    stats.pop("hits")
    stats.pop("misses")
    stats.pop("corrupt")

    def human(console: Console) -> None:
        table = Table("stage", "entries", "bytes", title=f"cache {stats['directory']}")
        for name, row in stats["stages"].items():
            table.add_row(name, str(row["entries"]), str(row["bytes"]))
        table.add_row("total", str(stats["entries"]), str(stats["bytes"]))
        console.print(table)

    output.emit(stats, json_flag=json_out, human=human)


__all__ = ["CACHE_MODES", "app"]
