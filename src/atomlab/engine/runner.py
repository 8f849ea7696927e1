"""Run a pipeline over an input JSONL: pipelined stages, bounded concurrency, ordered output.

Items are admitted up to ``max_items_in_flight``; each item runs its item stages, then fans out
into levels. A level holds one of the item's ``fanout.max_concurrent`` slots from the start of
its generation to the end of its mapping; generated levels wait in an ``asyncio.Queue`` for a
mapping worker, so one level's generation overlaps the previous level's mapping. Provider calls
share one semaphore of ``concurrency``. Finished items are written in input order the moment
their predecessors are written, so memory stays bounded and the output is byte-identical
whatever the concurrency::

    runner = PipelineRunner(load_pipeline("defect-triage"), OfflineProvider(), cache=cache)
    summary = await runner.run(Path("scans.jsonl"), Path("triage.jsonl"))
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import os
import signal
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from atomlab.core.errors import (
    AtomlabError,
    CircuitOpenError,
    ConfigError,
    ExitCode,
    InterruptedRunError,
    InvalidInputError,
    PolicyRefusedError,
    TerminatedError,
)
from atomlab.core.logging import get_logger
from atomlab.core.paths import input_file, output_file
from atomlab.engine.cache import ResponseCache, cache_key
from atomlab.engine.errors import MappingError, ProcessingError, ResumeRefusedError
from atomlab.engine.journal import (
    InputLine,
    Journal,
    OrderedSink,
    RunLock,
    RunManifest,
    RunPaths,
    discard,
    finalise,
    first_input_change,
    write_atomically,
)
from atomlab.engine.metrics import EngineMetrics
from atomlab.engine.pipeline import (
    SOURCE_REF_PREFIX,
    JsonDict,
    Pipeline,
    Stage,
    canonical_json,
    lookup,
)
from atomlab.llm import (
    Generation,
    GenerationRequest,
    InvalidResponseError,
    LlmQueue,
    Provider,
    QuotaExhaustedError,
)

log = get_logger("atomlab.engine")
# Errors about the run, not an item: they stop the run resumably in any mode.
_RUN_LEVEL_ERRORS = (ConfigError, PolicyRefusedError, CircuitOpenError, QuotaExhaustedError)

StopKind = Literal["interrupt", "terminate"]
DEFAULT_CONCURRENCY = 8
ITEMS_PER_SLOT = 2
WINDOW_FACTOR = 4  # finished items may wait this many admission windows for a slow predecessor
HASH_CHUNK = 1 << 20
LINE_DIGEST_BYTES = 8  # per input line in the journal: names the first changed line on resume
_BREAKER_LEVELS = {"closed": 0, "open": 1, "half_open": 2}


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How a run behaves; only ``strict`` and the provider/model affect the output bytes."""

    concurrency: int = DEFAULT_CONCURRENCY
    max_items_in_flight: int | None = None
    strict: bool = False
    resume: bool = False
    write_metrics: bool = True


@dataclass
class FailedItem:
    item_id: str
    stage: str
    error_type: str
    message: str
    request_id: str | None


@dataclass
class RunSummary:
    """What a run did; ``status`` is ``complete``, ``interrupted``, ``terminated`` or ``failed``."""

    pipeline: str
    output: Path
    provider: str = ""  # who produced the answers: "offline", "replay", "gemini", "openai" ...
    model: str = ""
    status: str = "running"
    items: int = 0
    ok: int = 0
    rejected: int = 0
    resumed_items: int = 0
    calls: int = 0
    cache_hits: int = 0
    journal_hits: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    failed: list[FailedItem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "output": str(self.output),
            "provider": self.provider,
            "model": self.model,
            "status": self.status,
            "items": self.items,
            "ok": self.ok,
            "rejected": self.rejected,
            "resumed_items": self.resumed_items,
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "journal_hits": self.journal_hits,
            "tokens": {"prompt": self.prompt_tokens, "output": self.output_tokens},
            "failed": [f.__dict__ for f in self.failed],
        }


@dataclass(frozen=True)
class InputScan:
    sha256: str
    items: int
    lines: list[InputLine] = field(default_factory=list)


def scan_input(path: Path, pipeline: Pipeline) -> InputScan:
    """Hash the input and check every line (JSON object, id and required fields, unique ids)."""
    input_file(path, option="--input", what="JSONL file")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    seen: set[str] = set()
    count = 0
    lines: list[InputLine] = []
    for line_no, item, raw in _read_lines(path, with_bytes=True):
        for name in (pipeline.spec.item.id, *pipeline.spec.item.required):
            if name not in item:
                raise InvalidInputError(
                    f"{path.name} line {line_no}: missing field {name!r}; every item of "
                    f"pipeline {pipeline.name!r} needs {name!r}",
                    path=str(path),
                    line=line_no,
                    field=name,
                )
        item_id = pipeline.item_id(item)
        if item_id in seen:
            raise InvalidInputError(
                f"{path.name} line {line_no}: id {item_id!r} appears twice; ids must be unique",
                path=str(path),
                line=line_no,
                field=pipeline.spec.item.id,
                value=item_id,
            )
        seen.add(item_id)
        fanout = pipeline.spec.fanout
        if fanout and fanout.field:
            _check_level_list(path, line_no, item, fanout.field, fanout.id)
        count += 1
        line_digest = hashlib.blake2b(raw.rstrip(b"\r\n"), digest_size=LINE_DIGEST_BYTES)
        lines.append(InputLine(line_no, item_id, line_digest.digest()))
    return InputScan(digest.hexdigest(), count, lines)


def _check_level_list(path: Path, line_no: int, item: dict[str, Any], name: str, key: str) -> None:
    entries = item.get(name)
    if not isinstance(entries, list) or not all(isinstance(e, dict) and key in e for e in entries):
        raise InvalidInputError(
            f"{path.name} line {line_no}: {name!r} must be a list of objects each with {key!r}",
            path=str(path),
            line=line_no,
            field=name,
        )
    seen: set[str] = set()
    for entry in entries:
        level_id = str(entry[key])  # as the engine names the level (journal keys, stage names)
        if level_id in seen:
            raise InvalidInputError(
                f"{path.name} line {line_no}: {name!r} has two entries with {key} {level_id!r}; "
                f"each {key} must be unique within its item",
                path=str(path),
                line=line_no,
                field=f"{name}.{key}",
                value=level_id,
            )
        seen.add(level_id)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _read_lines(path: Path, *, with_bytes: bool = False) -> Iterator[Any]:
    """``(line_no, item)`` per non-blank line; ``(line_no, item, raw)`` with ``with_bytes``."""
    with path.open("rb") as handle:
        for line_no, data in enumerate(handle, start=1):
            try:  # a UTF-8 byte order mark (Windows editors write one) is not part of the JSON
                raw = data.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInputError(
                    f"{path.name} line {line_no} is not UTF-8 (byte {exc.start + 1}); "
                    "save the input as UTF-8",
                    path=str(path),
                    line=line_no,
                ) from None
            if not raw.strip():
                continue
            try:
                item = json.loads(raw, parse_constant=_refuse_constant)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(
                    f"{path.name} line {line_no} is not valid JSON ({exc.msg}); "
                    "the input must hold one JSON object per line",
                    path=str(path),
                    line=line_no,
                ) from None
            except RecursionError:
                raise InvalidInputError(
                    f"{path.name} line {line_no} is nested too deeply; flatten the item",
                    path=str(path),
                    line=line_no,
                ) from None
            except ValueError as exc:  # NaN / Infinity: not JSON, and not a number to work with
                raise InvalidInputError(
                    f"{path.name} line {line_no}: {exc}; use finite numbers (or null)",
                    path=str(path),
                    line=line_no,
                ) from None
            if not isinstance(item, dict):
                raise InvalidInputError(
                    f"{path.name} line {line_no} is a JSON {type(item).__name__}, not an object",
                    path=str(path),
                    line=line_no,
                )
            yield (line_no, item, data) if with_bytes else (line_no, item)


@dataclass
class _Outcome:
    index: int
    item_id: str
    outcome: str
    line: bytes


class UnexpectedEngineError(AtomlabError):
    """The engine broke one of its own invariants (a bug); the run stays resumable."""

    type_name = "engine_bug"


class _RunStoppedError(Exception):
    """Raised inside the run when it must end early (signal, strict failure, fatal error)."""


class PipelineRunner:
    """Runs one pipeline with one provider; a library object the CLI only wraps."""

    def __init__(
        self,
        pipeline: Pipeline,
        provider: Provider,
        *,
        queue: LlmQueue | None = None,
        cache: ResponseCache | None = None,
        metrics: EngineMetrics | None = None,
        options: RunOptions | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        # Called once the run really starts (input checked, lock held, journal open): a refused
        # run changes nothing, so nothing may note it as started.
        self._on_start = on_start or (lambda: None)
        self.provider = provider
        self.queue = queue
        self.cache = cache
        self.metrics = metrics or EngineMetrics()
        self.options = options or RunOptions()
        self._on_progress = on_progress or (lambda _done, _total: None)
        self._calls = asyncio.Semaphore(self.options.concurrency)
        self._stage_calls = {
            stage.name: asyncio.Semaphore(stage.spec.max_concurrent)
            for stage in pipeline.stages
            if stage.spec.max_concurrent is not None
        }
        self._stop_kind: StopKind | None = None
        self._fatal: BaseException | None = None
        self._active: dict[int, asyncio.Task[None]] = {}
        self._pending: dict[int, _Outcome] = {}
        self._next = 0
        self._progress = asyncio.Event()
        self._journal: Journal | None = None
        self._sink: OrderedSink | None = None
        self._run_tag = uuid.uuid4().hex[:8]
        self._strict_rejects: list[bytes] = []
        self.summary = RunSummary(pipeline.name, Path(), provider.name, provider.model)

    @property
    def stopping(self) -> bool:
        return self._stop_kind is not None or self._fatal is not None

    def manifest_for(self, input_sha256: str) -> RunManifest:
        settings = {
            "provider": self.provider.name,
            "model": self.provider.model,
            "strict": self.options.strict,
            "schema_version": self.pipeline.schema_version,
        }
        return RunManifest(input_sha256, self.pipeline.name, self.pipeline.digest, settings)

    def request_stop(self, kind: StopKind = "interrupt") -> None:
        """Stop scheduling, cancel in-flight calls; :meth:`run` then flushes and raises."""
        if self._stop_kind is None:
            self._stop_kind = kind
            log.warning("engine.stopping", reason=kind, in_flight_items=len(self._active))
        for task in list(self._active.values()):
            task.cancel()
        self._progress.set()

    async def run(self, input_path: Path, output_path: Path) -> RunSummary:
        """Process ``input_path`` into ``output_path``; resumable when ``options.resume``.

        Raises ``RunBusyError`` when another process is writing ``output_path``.
        """
        _refuse_to_overwrite(input_path, RunPaths(output_path))
        scan = scan_input(input_path, self.pipeline)
        if self.cache is not None:
            self.cache.check_location()
        lock = RunLock(RunPaths(output_path))
        lock.acquire()
        try:
            return await self._run_locked(input_path, output_path, scan)
        finally:
            lock.release()

    async def _run_locked(self, input_path: Path, output_path: Path, scan: InputScan) -> RunSummary:
        paths = RunPaths(output_path)
        self.summary = RunSummary(
            self.pipeline.name,
            output_path,
            self.provider.name,
            self.provider.model,
            items=scan.items,
        )
        manifest = self.manifest_for(scan.sha256)
        journal, done, out_end, rejects_end = self._open_journal(paths, manifest, scan)
        self._journal = journal
        try:
            self._on_start()
            # Killed between renaming the part file and marking the journal complete:
            renamed = (
                self.options.resume
                and not paths.part.exists()
                and paths.output.exists()
                and done == scan.items
            )
            if renamed or (journal.status() == "complete" and paths.output.exists()):
                journal.set_status("complete")
                self.summary.status = "complete"
                self.summary.resumed_items = done
                return self.summary
            self._sink = OrderedSink(paths, journal, out_end=out_end, rejects_end=rejects_end)
            self._next = done
            self.summary.resumed_items = done
            self._on_progress(done, scan.items)
            await self._feed(input_path, skip=done)
            await self._settle()
            self._sink.sync()
            if self.stopping:
                self._raise_stopped(journal)
            if self._next != scan.items:  # never call a run complete with an item missing
                journal.set_status("failed")
                raise UnexpectedEngineError(
                    f"only {self._next} of {scan.items} items were written; "
                    "resume with --resume (this is a bug, please report it)",
                    written=self._next,
                )
            self._sink.close()
            finalise(paths)
            journal.set_status("complete")
            self.summary.status = "complete"
            log.info("engine.run_complete", **_brief(self.summary))
            return self.summary
        finally:
            if self._sink is not None:
                self._sink.close()
            journal.close()
            if self.cache is not None:
                self.cache.close()
            if self.options.write_metrics:
                self.metrics.write_textfile(str(paths.metrics))

    def _open_journal(
        self, paths: RunPaths, manifest: RunManifest, scan: InputScan
    ) -> tuple[Journal, int, int, int]:
        if not self.options.resume:
            discard(paths)
            journal = Journal(paths.journal)
            journal.begin(manifest, scan.lines)
            journal.claim()
            return journal, 0, 0, 0
        if not paths.journal.exists():
            raise ResumeRefusedError(
                f"nothing to resume: no journal at {str(paths.journal)!r}; "
                "run without --resume to start",
                journal=str(paths.journal),
            )
        journal = Journal(paths.journal)
        try:
            previous = journal.manifest()
            changes = (
                previous.differences(manifest) if previous else ["the journal has no manifest"]
            )
            details: dict[str, Any] = {}
            if previous and previous.input_sha256 != manifest.input_sha256:
                change = first_input_change(journal.input_lines(), scan.lines)
                if change is not None:
                    changes[0] += f": {change['sentence']}"
                    details = {"line": change["line"], "item_id": change["item_id"]}
            if changes:
                raise ResumeRefusedError(
                    "cannot resume "
                    + str(paths.output)
                    + ": "
                    + "; ".join(changes)
                    + ". Resume with the same input, pipeline and settings, or run without "
                    "--resume to start over (the cache keeps finished calls)",
                    changes=changes,
                    **details,
                )
            done, out_end, rejects_end, outcomes = journal.finished()
            journal.claim()
        except BaseException:
            journal.close()
            raise
        self.summary.ok = outcomes.get("ok", 0)
        self.summary.rejected = outcomes.get("rejected", 0)
        if journal.status() != "complete":
            journal.set_status("running")
        return journal, done, out_end, rejects_end

    def _raise_stopped(self, journal: Journal) -> None:
        if self._fatal is not None:
            journal.set_status("failed")
            self.summary.status = "failed"
            if self._strict_rejects:
                # Not journaled: a resume tries the item again and rewrites this file.
                rejects = RunPaths(self.summary.output).rejects
                write_atomically(rejects, b"".join(self._strict_rejects[:1]))
                if isinstance(self._fatal, AtomlabError):
                    self._fatal.details.setdefault("rejects", str(rejects))
            raise self._fatal
        kind = self._stop_kind
        journal.set_status("interrupted")
        written = self._next
        message = (
            f"stopped after {written} of {self.summary.items} items; "
            f"continue with --resume (partial output in {RunPaths(self.summary.output).part})"
        )
        if kind == "terminate":
            self.summary.status = "terminated"
            raise TerminatedError(message, items_done=written)
        self.summary.status = "interrupted"
        raise InterruptedRunError(message, items_done=written)

    # --- scheduling ---------------------------------------------------------------------

    async def _feed(self, input_path: Path, *, skip: int) -> None:
        # Items have little parallelism early on (one item-stage call), so admit twice as
        # many items as call slots to keep every slot busy.
        limit = self.options.max_items_in_flight or ITEMS_PER_SLOT * self.options.concurrency
        window = limit * WINDOW_FACTOR
        index = -1
        for _line_no, item in _read_lines(input_path):
            index += 1
            if index < skip:
                continue
            while not self.stopping and (
                len(self._active) >= limit or index >= self._next + window
            ):
                self._progress.clear()
                await self._progress.wait()
            if self.stopping:
                return
            task = asyncio.create_task(self._item_task(index, item))
            self._active[index] = task
            # A done callback (not a finally) also runs for a task cancelled before it started.
            task.add_done_callback(functools.partial(self._forget, index))

    def _forget(self, index: int, _task: asyncio.Task[None]) -> None:
        self._active.pop(index, None)
        self._progress.set()

    async def _settle(self) -> None:
        while self._active:
            await asyncio.gather(*self._active.values(), return_exceptions=True)

    async def _item_task(self, index: int, raw_item: dict[str, Any]) -> None:
        item = JsonDict(raw_item)
        item_id = self.pipeline.item_id(item)
        try:
            record = await self._process(index, item_id, item)
            self._deliver(_Outcome(index, item_id, "ok", _line(record)))
        except asyncio.CancelledError:
            pass  # stopping: the item stays unfinished in the journal
        except _RunStoppedError:
            pass
        except ProcessingError as exc:
            self._reject(index, item_id, exc)
        except Exception as exc:  # a bug or an unforeseen error: never lose the item silently
            self._stop_fatal(exc)
            with contextlib.suppress(Exception):
                log.error("engine.item_crashed", item_id=item_id, error=repr(exc))

    def _reject(self, index: int, item_id: str, exc: ProcessingError) -> None:
        cause = str(exc.details.get("cause", exc.type_name))
        failure = FailedItem(item_id, exc.stage, cause, exc.message, exc.request_id)
        self.summary.failed.append(failure)
        log.warning(
            "engine.item_rejected",
            item_id=item_id,
            stage=exc.stage,
            error=exc.type_name,
            cause=cause,
            request_id=exc.request_id,
            provider=self.provider.name,
            model=self.provider.model,
        )
        line = _reject_line(index, item_id, exc.stage, exc, exc.request_id)
        if self.options.strict:
            self._strict_rejects.append(line)
            self._stop_fatal(exc)
            return
        self._deliver(_Outcome(index, item_id, "rejected", line))

    def _stop_fatal(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        for task in list(self._active.values()):
            task.cancel()
        self._progress.set()

    def _deliver(self, outcome: _Outcome) -> None:
        assert self._sink is not None
        self._pending[outcome.index] = outcome
        while self._next in self._pending:
            ready = self._pending.pop(self._next)
            self._sink.write(ready.index, ready.item_id, ready.outcome, ready.line)
            if ready.outcome == "ok":
                self.summary.ok += 1
            else:
                self.summary.rejected += 1
            self.metrics.items.labels(outcome=ready.outcome).inc()
            self._next += 1
            self._on_progress(self._next, self.summary.items)

    # --- one item -----------------------------------------------------------------------

    async def _process(self, index: int, item_id: str, item: dict[str, Any]) -> dict[str, Any]:
        assert self._journal is not None
        run = _ItemRun(index, item_id, item, self._journal.stages_for(index))
        stages: dict[str, Any] = {}
        for stage in self.pipeline.item_stages:
            context = self._context(item, stages)
            stages[stage.name] = await self._generate(run, stage, stage.name, context)
        levels = self.pipeline.level_entries(item)
        level_results = await self._run_levels(run, stages, levels)
        return {
            "schema_version": self.pipeline.schema_version,
            "pipeline": self.pipeline.name,
            "id": item_id,
            "input": item,
            "stages": stages,
            "levels": [
                {"id": level_id, "entry": entry, "stages": level_results[position]}
                for position, (level_id, entry) in enumerate(levels)
            ],
            "meta": {
                "provider": self.provider.name,
                "model": self.provider.model,
                "pipeline_digest": self.pipeline.digest,
            },
        }

    async def _run_levels(
        self,
        run: _ItemRun,
        item_stages: dict[str, Any],
        levels: list[tuple[str, dict[str, Any]]],
    ) -> dict[int, dict[str, Any]]:
        """Generate levels under the item's slot bound; map them as they come off the queue."""
        results: dict[int, dict[str, Any]] = {}
        if not levels:
            return results
        slots = asyncio.Semaphore(self.pipeline.max_concurrent_levels)
        generated: asyncio.Queue[tuple[int, str, dict[str, Any], dict[str, Any]] | None] = (
            asyncio.Queue()
        )

        async def produce(position: int, level_id: str, entry: dict[str, Any]) -> None:
            await slots.acquire()
            try:
                outputs: dict[str, Any] = {}
                for stage in self.pipeline.level_generate_stages:
                    context = self._context(run.item, {**item_stages, **outputs}, level=entry)
                    key = f"{stage.name}@{level_id}"
                    outputs[stage.name] = await self._generate(run, stage, key, context)
            except BaseException:
                slots.release()
                raise
            await generated.put((position, level_id, entry, outputs))

        async def consume() -> None:
            while (job := await generated.get()) is not None:
                position, level_id, entry, outputs = job
                try:
                    context = self._context(run.item, {**item_stages, **outputs}, level=entry)
                    for stage in self.pipeline.level_map_stages:
                        outputs[stage.name] = await self._map(run, stage, level_id, context)
                    results[position] = outputs
                finally:
                    slots.release()

        workers = [
            asyncio.create_task(consume())
            for _ in range(min(len(levels), self.pipeline.max_concurrent_levels))
        ]
        producers = [
            asyncio.create_task(produce(position, level_id, entry))
            for position, (level_id, entry) in enumerate(levels)
        ]
        try:
            # Watch the workers too: if every worker died, producers would wait for a slot forever.
            await _first_error(producers, watch=workers)
            for _ in workers:
                await generated.put(None)
            await _first_error(workers)
        finally:
            for task in (*producers, *workers):
                task.cancel()
            await asyncio.gather(*producers, *workers, return_exceptions=True)
        return results

    def _context(
        self, item: dict[str, Any], stages: Mapping[str, Any], *, level: Any = None
    ) -> dict[str, Any]:
        context: dict[str, Any] = {
            "item": item,
            "stages": stages,
            "catalogues": self.pipeline.catalogues,
        }
        if level is not None:
            context["level"] = level
        return context

    async def _map(
        self, run: _ItemRun, stage: Stage, level_id: str, context: dict[str, Any]
    ) -> dict[str, Any]:
        """One call per catalogue; answers keyed by source position are turned into source ids."""
        source_path = stage.spec.source or ""
        try:
            found = lookup(context["stages"], source_path, where=f"stage {stage.name!r} source")
        except KeyError as exc:
            raise MappingError(str(exc), item_id=run.item_id, stage=stage.name) from None
        many = isinstance(found, list)
        sources = found if many else [found]
        ids = [
            _source_id(run.item_id, level_id, stage.name, position, source)
            for position, source in enumerate(sources)
        ]
        refs = {f"{SOURCE_REF_PREFIX}{n + 1}": source for n, source in enumerate(sources)}
        mapped: dict[str, Any] = {
            "sources": [
                {"id": sid, "path": f"{source_path}.{n}" if many else source_path}
                for n, sid in enumerate(ids)
            ],
            "catalogues": {},
        }
        if not sources:
            return mapped

        async def one(catalogue: str) -> None:
            model = self.pipeline.map_model(stage, catalogue, len(sources))
            map_context = {
                **context,
                "sources": refs,
                "catalogue": {"name": catalogue, "entries": self.pipeline.catalogues[catalogue]},
            }
            key = f"{stage.name}.{catalogue}@{level_id}"
            answer = await self._call(run, stage, key, model, map_context, error=MappingError)
            mapped["catalogues"][catalogue] = {
                sid: sorted(set(answer[f"{SOURCE_REF_PREFIX}{n + 1}"])) for n, sid in enumerate(ids)
            }

        # The catalogues of one level are independent: map them at the same time.
        await _all_or_cancel([one(catalogue) for catalogue in stage.spec.catalogues])
        return mapped

    async def _generate(
        self, run: _ItemRun, stage: Stage, key: str, context: dict[str, Any]
    ) -> dict[str, Any]:
        assert stage.output_model is not None
        return await self._call(run, stage, key, stage.output_model, context, error=ProcessingError)

    async def _call(
        self,
        run: _ItemRun,
        stage: Stage,
        key: str,
        schema: type[BaseModel],
        context: dict[str, Any],
        *,
        error: type[ProcessingError],
    ) -> dict[str, Any]:
        """Journal, then cache, then the provider: the first that has the answer gives it."""
        if key in run.journaled:
            self.summary.journal_hits += 1
            return JsonDict(run.journaled[key])
        if self.stopping:
            raise _RunStoppedError
        try:
            prompt = stage.template.render(context)
            system = self.pipeline.system.render(context) if self.pipeline.system else None
        except KeyError as exc:
            raise error(str(exc.args[0]), item_id=run.item_id, stage=key) from None
        cache, address, value = self.cache, "", None
        if cache is not None:
            address = cache_key(
                provider=self.provider.name,
                model=self.provider.model,
                prompt=prompt,
                system=system,
                schema=schema,
                schema_version=self.pipeline.schema_version,
                temperature=stage.spec.temperature,
            )
            value = cache.get(address, schema)
        if value is not None:
            self.summary.cache_hits += 1
        else:
            value = await self._ask(run, stage, key, schema, prompt, system, error)
            if cache is not None:
                cache.put(
                    address,
                    value,
                    provider=self.provider.name,
                    model=self.provider.model,
                    schema=schema,
                    stage=stage.name,
                )
        assert self._journal is not None
        self._journal.record_stage(run.index, key, value)
        return JsonDict(value)

    async def _ask(
        self,
        run: _ItemRun,
        stage: Stage,
        key: str,
        schema: type[BaseModel],
        prompt: str,
        system: str | None,
        error: type[ProcessingError],
    ) -> dict[str, Any]:
        request = GenerationRequest(
            prompt=prompt,
            schema=schema,
            system=system,
            temperature=stage.spec.temperature,
            request_id=f"{self._run_tag}:{run.item_id}:{key}",
        )
        label = stage.name
        instruments = self.metrics.for_stage(label)
        instruments.submitted.inc()
        async with self._stage_calls.get(label, contextlib.nullcontext()), self._calls:
            if self.stopping:
                raise _RunStoppedError
            self.metrics.inflight.inc()
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                generation = await self._send(request, label)
            except AtomlabError as exc:
                instruments.error.inc()
                raise self._stage_failure(exc, run, key, request.request_id, error) from exc
            finally:
                self.metrics.inflight.dec()
                instruments.duration.observe(loop.time() - started)
        instruments.ok.inc()
        if generation.attempts > 1:
            instruments.retries.inc(generation.attempts - 1)
        self.summary.calls += 1
        self.summary.prompt_tokens += generation.usage.prompt_tokens
        self.summary.output_tokens += generation.usage.output_tokens
        self.metrics.prompt_tokens.inc(generation.usage.prompt_tokens)
        self.metrics.output_tokens.inc(generation.usage.output_tokens)
        value: dict[str, Any] = generation.value.model_dump(mode="json")
        return value

    async def _send(self, request: GenerationRequest[Any], stage: str) -> Generation[Any]:
        if self.queue is None:
            return await self.provider.generate(request)
        try:
            return await self.queue.submit(request, key=stage)
        finally:
            self.metrics.breaker_state.set(_BREAKER_LEVELS.get(self.queue.breaker.state.value, 0))

    def _stage_failure(
        self,
        exc: AtomlabError,
        run: _ItemRun,
        key: str,
        request_id: str,
        error: type[ProcessingError],
    ) -> BaseException:
        """Item failures become ``error``; run-level ones (auth, budget, breaker, a quota spent
        for longer than the queue waits) stop the run resumably."""
        if isinstance(exc, _RUN_LEVEL_ERRORS):
            exc.details.update(item_id=run.item_id, stage=key)
            self._stop_fatal(exc)
            return _RunStoppedError()
        if isinstance(exc, InvalidResponseError) or not self.options.strict:
            return error(
                exc.message,
                item_id=run.item_id,
                stage=key,
                request_id=getattr(exc, "request_id", "") or request_id,
                cause=exc.type_name,
            )
        exc.details.update(item_id=run.item_id, stage=key)
        failure = FailedItem(run.item_id, key, exc.type_name, exc.message, request_id)
        self.summary.failed.append(failure)
        self._strict_rejects.append(_reject_line(run.index, run.item_id, key, exc, request_id))
        self._stop_fatal(exc)
        return _RunStoppedError()


@dataclass
class _ItemRun:
    index: int
    item_id: str
    item: dict[str, Any]
    journaled: dict[str, dict[str, Any]]


async def _first_error(
    tasks: Sequence[asyncio.Task[None]], *, watch: Sequence[asyncio.Task[None]] = ()
) -> None:
    """Wait for all ``tasks``; raise the first failure among them or the ``watch`` ed tasks."""
    pending = set(tasks)
    watched = set(watch)
    while pending:
        done, _ = await asyncio.wait(pending | watched, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
            if task in watched:
                # A watched task ended on its own: nothing can consume what producers make.
                raise RuntimeError("a mapping worker ended early")
        pending -= done


async def _all_or_cancel(coroutines: list[Coroutine[Any, Any, None]]) -> None:
    """Run ``coroutines`` concurrently; on the first failure cancel the others and raise it."""
    tasks = [asyncio.create_task(coroutine) for coroutine in coroutines]
    try:
        await _first_error(tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _refuse_to_overwrite(input_path: Path, paths: RunPaths) -> None:
    """The input must not be one of the files the run writes (it would be lost), and the output
    must be a file name (found now, not after the whole run when the part file is renamed)."""
    output_file(paths.output, option="--output")
    input_file(input_path, option="--input", what="JSONL file")
    written = (
        paths.output,
        paths.part,
        paths.journal,
        paths.rejects,
        paths.rejects_part,
        paths.metrics,
        paths.lock,
    )
    for path in written:
        same = input_path.resolve() == path.resolve()
        if not same and input_path.exists() and path.exists():
            same = input_path.samefile(path)
        if same:
            raise InvalidInputError(
                f"--input {str(input_path)!r} is also {str(path)!r}, a file the run writes; "
                "pass an --output elsewhere so the input is not overwritten",
                field="--output",
                value=str(paths.output),
            )


def _source_id(item_id: str, level_id: str, stage: str, position: int, source: Any) -> str:
    """A short id for one mapped thing, stable for the same content at the same place."""
    digest = hashlib.sha256(
        canonical_json([item_id, level_id, stage, position, source]).encode()
    ).digest()
    return base64.b32encode(digest[:5]).decode("ascii")


def _reject_line(
    index: int, item_id: str, stage: str, exc: AtomlabError, request_id: str | None
) -> bytes:
    cause = str(exc.details.get("cause", exc.type_name))
    return _line(
        {
            "id": item_id,
            "index": index,
            "stage": stage,
            "error": {"type": exc.type_name, "cause": cause, "message": exc.message},
            "request_id": request_id,
        }
    )


def _line(record: Mapping[str, Any]) -> bytes:
    return (canonical_json(record) + "\n").encode("utf-8")


def _brief(summary: RunSummary) -> dict[str, Any]:
    data = summary.to_dict()
    data.pop("failed")
    return data


def run_blocking(
    runner: PipelineRunner,
    input_path: Path,
    output_path: Path,
    *,
    handle_signals: bool = True,
) -> RunSummary:
    """Run in a fresh event loop; SIGINT/SIGTERM stop it cleanly, a second signal exits at once."""

    def on_signal(kind: str) -> None:
        if runner.stopping:
            code = ExitCode.INTERRUPTED if kind == "interrupt" else ExitCode.TERMINATED
            os._exit(int(code))
        runner.request_stop("terminate" if kind == "terminate" else "interrupt")

    async def main() -> RunSummary:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if handle_signals:
            for sig, kind in ((signal.SIGINT, "interrupt"), (signal.SIGTERM, "terminate")):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, on_signal, kind)
                    installed.append(sig)
        try:
            return await runner.run(input_path, output_path)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    return asyncio.run(main())


__all__ = [
    "FailedItem",
    "InputScan",
    "PipelineRunner",
    "RunOptions",
    "RunSummary",
    "run_blocking",
    "scan_input",
]
