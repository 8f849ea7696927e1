"""The LLM batch engine: pipelines declared in YAML, run with cache, journal, resume and metrics.

    pipeline = load_pipeline("defect-triage")
    runner = PipelineRunner(pipeline, make_provider(settings.llm), cache=ResponseCache(dir))
    summary = run_blocking(runner, Path("scans.jsonl"), Path("triage.jsonl"))

See docs/engine.md for the pipeline format, the cache layout and the resume rules.
"""

from atomlab.engine.cache import (
    CACHE_MODES,
    CacheMode,
    ManifestDamagedError,
    ResponseCache,
    cache_key,
    check_cache_location,
)
from atomlab.engine.cache_validate import CacheReport, Finding
from atomlab.engine.errors import (
    MappingError,
    PipelineError,
    ProcessingError,
    ResumeRefusedError,
    RunBusyError,
)
from atomlab.engine.journal import RunManifest, RunPaths, describe_run, write_atomically
from atomlab.engine.loaders import (
    DirectoryMappingLoader,
    DirectoryPromptLoader,
    InMemoryMappingLoader,
    InMemoryPromptLoader,
    MappingLoader,
    PromptLoader,
)
from atomlab.engine.metrics import EngineMetrics
from atomlab.engine.migrations import MIGRATIONS, RecordV11, migrate_file, migrate_record
from atomlab.engine.pipeline import (
    Pipeline,
    PipelineSpec,
    build_pipeline,
    list_pipelines,
    load_pipeline,
    sample_input,
)
from atomlab.engine.registry import RunRef, count_items, known_runs, register_run, run_progress
from atomlab.engine.runner import (
    FailedItem,
    PipelineRunner,
    RunOptions,
    RunSummary,
    run_blocking,
    scan_input,
)

__all__ = [
    "CACHE_MODES",
    "MIGRATIONS",
    "CacheMode",
    "CacheReport",
    "DirectoryMappingLoader",
    "DirectoryPromptLoader",
    "EngineMetrics",
    "FailedItem",
    "Finding",
    "InMemoryMappingLoader",
    "InMemoryPromptLoader",
    "ManifestDamagedError",
    "MappingError",
    "MappingLoader",
    "Pipeline",
    "PipelineError",
    "PipelineRunner",
    "PipelineSpec",
    "ProcessingError",
    "PromptLoader",
    "RecordV11",
    "ResponseCache",
    "ResumeRefusedError",
    "RunBusyError",
    "RunManifest",
    "RunOptions",
    "RunPaths",
    "RunRef",
    "RunSummary",
    "build_pipeline",
    "cache_key",
    "check_cache_location",
    "count_items",
    "describe_run",
    "known_runs",
    "list_pipelines",
    "load_pipeline",
    "migrate_file",
    "migrate_record",
    "register_run",
    "run_blocking",
    "run_progress",
    "sample_input",
    "scan_input",
    "write_atomically",
]
