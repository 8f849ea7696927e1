"""``atomlab instrument``: read signals and specs, and write specs through the guard."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from atomlab.cli import output
from atomlab.core.errors import ConnectionFailedError
from atomlab.core.settings import InstrumentSettings
from atomlab.instrument import (
    AUDIT_LOG_NAME,
    DEFAULT_PORTS,
    Catalog,
    CatalogEntry,
    NanonisClient,
    WriteGuard,
    WriteResult,
    is_known,
    load_catalog,
    probe_ports,
    read_values,
)

app = typer.Typer(
    name="instrument",
    help="Talk to a Nanonis SPM controller or the atomlab simulator.",
    no_args_is_help=True,
)

# Values such as -0.5 or -1e-11 look like options to Click; let them through as arguments.
NUMBER_ARGS = {"ignore_unknown_options": True}

HostOption = Annotated[
    str | None, typer.Option("--host", help="Instrument address (default: instrument.host).")
]
PortOption = Annotated[
    int | None, typer.Option("--port", help="TCP port (default: instrument.port, 6501).")
]
TimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--timeout-s", help="Per-call timeout in seconds (default: instrument.call_timeout_s)."
    ),
]
CatalogOption = Annotated[
    Path | None, typer.Option("--catalog", help="Catalog YAML (default: the packaged one).")
]
PlanOnlyOption = Annotated[
    bool, typer.Option("--plan-only", help="Print the plan and send nothing.")
]
AllowWritesOption = Annotated[
    bool,
    typer.Option("--allow-writes", help="Allow this write (default: instrument.allow_writes)."),
]
WhoOption = Annotated[
    str | None, typer.Option("--who", help="Who is writing, for the audit log (default user@pid).")
]
ReadOption = Annotated[
    bool, typer.Option("--read", help="Also read the current values from the instrument.")
]


def _settings() -> InstrumentSettings:
    return output.state().loaded.settings.instrument


def _catalog(path: Path | None) -> Catalog:
    return load_catalog(path or _settings().catalog_path)


@contextmanager
def _client(host: str | None, port: int | None, timeout_s: float | None) -> Iterator[NanonisClient]:
    settings = _settings()
    client = NanonisClient(
        host or settings.host,
        port or settings.port,
        connect_timeout_s=settings.connect_timeout_s,
        call_timeout_s=timeout_s or settings.call_timeout_s,
    )
    with client:
        yield client


def _guard(
    client: NanonisClient, catalog: Catalog, allow_writes: bool, who: str | None
) -> WriteGuard:
    loaded = output.state().loaded.settings
    settings = loaded.instrument
    guard = WriteGuard(
        client,
        catalog,
        allow_writes=allow_writes or settings.allow_writes,
        audit_log=settings.audit_log or loaded.home / AUDIT_LOG_NAME,
    )
    if who:
        guard.who = who
    return guard


def _entry_row(entry: CatalogEntry, values: dict[str, Any] | None) -> dict[str, Any]:
    row = entry.describe()
    if values is not None:
        row["value"] = values.get(entry.name)
    return row


def _list(kind: str, entries: tuple[CatalogEntry, ...], read: bool, **conn: Any) -> None:
    values: dict[str, Any] | None = None
    if read:
        with _client(**conn) as client:
            values = dict(read_values(client, entries))
    rows = [_entry_row(e, values) for e in entries]

    def human(console: Console) -> None:
        for e in entries:
            limits = f"  [{e.limits.min:g} .. {e.limits.max:g}]" if e.limits else ""
            value = f" = {values[e.name]:g}" if values is not None else ""
            source = f"{e.get.command}[{e.get.field}]"
            console.print(
                f"{e.name:<24} {e.unit:<5} {source:<32}{limits}{value}  {e.label}",
                markup=False,
                highlight=False,
            )

    output.emit({kind: rows}, human=human)


@app.command("signals")
def signals(
    read: ReadOption = False,
    host: HostOption = None,
    port: PortOption = None,
    timeout_s: TimeoutOption = None,
    catalog: CatalogOption = None,
    json_out: output.JsonOption = False,
) -> None:
    """List the read-only signals of the catalog (with --read: their current values)."""
    output.use_json(json_out)
    _list("signals", _catalog(catalog).signals, read, host=host, port=port, timeout_s=timeout_s)


@app.command("specs")
def specs(
    read: ReadOption = False,
    host: HostOption = None,
    port: PortOption = None,
    timeout_s: TimeoutOption = None,
    catalog: CatalogOption = None,
    json_out: output.JsonOption = False,
) -> None:
    """List the settable specs with their limits and safety (with --read: current values)."""
    output.use_json(json_out)
    _list("specs", _catalog(catalog).specs, read, host=host, port=port, timeout_s=timeout_s)


@app.command("get")
def get(
    name: Annotated[str, typer.Argument(help="Catalog name or label, or a Nanonis command.")],
    host: HostOption = None,
    port: PortOption = None,
    timeout_s: TimeoutOption = None,
    catalog: CatalogOption = None,
    json_out: output.JsonOption = False,
) -> None:
    """Read one signal or spec (bias_v), or every field of a command (Scan.FrameGet)."""
    output.use_json(json_out)
    if "." in name and is_known(name):
        with _client(host, port, timeout_s) as client:
            values = client.call(name).display_values()
        human = "\n".join(f"{k} = {v}" for k, v in values.items()) or f"{name}: ok"
        output.emit({"command": name, "values": values}, human=human)
        return
    entry = _catalog(catalog).find(name)
    with _client(host, port, timeout_s) as client:
        value = read_values(client, [entry], use_signals=False)[entry.name]
    payload = {"name": entry.name, "label": entry.label, "unit": entry.unit, "value": value}
    output.emit(payload, human=f"{entry.name} = {value:g} {entry.unit}".rstrip())


def _emit_write(result: WriteResult, entry: CatalogEntry) -> None:
    plan = result.plan

    def human(console: Console) -> None:
        verb = {"dry_run": "plan (nothing sent)", "done": "done"}.get(
            result.outcome, result.outcome
        )
        steps = ", ".join(f"{v:g}" for v in plan.steps[:8]) + (
            " ..." if len(plan.steps) > 8 else ""
        )
        console.print(
            f"{plan.spec}: {plan.old:g} -> {plan.target:g} {entry.unit}  [{verb}]\n"
            f"  {len(plan.steps)} step(s) via {plan.command}: {steps}\n"
            f"  every {plan.interval_s:g} s, about {plan.duration_s:g} s",
            markup=False,
            highlight=False,
        )
        for note in plan.notes:
            console.print(f"  note: {note}", markup=False, highlight=False)
        if result.readback is not None:
            console.print(
                f"  read back: {result.readback:g} {entry.unit}", markup=False, highlight=False
            )

    output.emit(result.to_dict(), human=human)


@app.command("set", context_settings=NUMBER_ARGS)
def set_(
    name: Annotated[str, typer.Argument(help="Spec name or label, e.g. bias_v.")],
    value: Annotated[float, typer.Argument(help="New value in the spec's unit (-0.5 is fine).")],
    plan_only: PlanOnlyOption = False,
    allow_writes: AllowWritesOption = False,
    who: WhoOption = None,
    host: HostOption = None,
    port: PortOption = None,
    timeout_s: TimeoutOption = None,
    catalog: CatalogOption = None,
    json_out: output.JsonOption = False,
) -> None:
    """Write one spec through the guard (a change above max_step is ramped); exit 2 if refused."""
    output.use_json(json_out)
    cat = _catalog(catalog)
    entry = cat.spec(name)
    with _client(host, port, timeout_s) as client:
        result = _guard(client, cat, allow_writes, who).set(entry.name, value, plan_only=plan_only)
    _emit_write(result, entry)


@app.command("ramp", context_settings=NUMBER_ARGS)
def ramp(
    name: Annotated[str, typer.Argument(help="Spec name or label.")],
    start: Annotated[float, typer.Argument(help="First value.")],
    end: Annotated[float, typer.Argument(help="Last value.")],
    step: Annotated[float, typer.Argument(help="Step size (positive; direction is inferred).")],
    interval_s: Annotated[
        float | None,
        typer.Option(
            "--interval-s", help="Pause between steps (default: the spec's ramp_interval_s)."
        ),
    ] = None,
    plan_only: PlanOnlyOption = False,
    allow_writes: AllowWritesOption = False,
    who: WhoOption = None,
    host: HostOption = None,
    port: PortOption = None,
    timeout_s: TimeoutOption = None,
    catalog: CatalogOption = None,
    json_out: output.JsonOption = False,
) -> None:
    """Ramp a spec from START to END in steps of STEP; exit 2 if the plan breaks a limit."""
    output.use_json(json_out)
    cat = _catalog(catalog)
    entry = cat.spec(name)
    with _client(host, port, timeout_s) as client:
        guard = _guard(client, cat, allow_writes, who)
        result = guard.ramp(
            entry.name, start, end, step, interval_s=interval_s, plan_only=plan_only
        )
    _emit_write(result, entry)


@app.command("doctor")
def doctor(
    host: HostOption = None,
    port: Annotated[
        list[int] | None,
        typer.Option("--port", help="Port to probe; repeat for several (default 6501-6504)."),
    ] = None,
    timeout_s: TimeoutOption = None,
    json_out: output.JsonOption = False,
) -> None:
    """Which ports answer the Nanonis protocol, and their round-trip latency; exit 5 if none."""
    output.use_json(json_out)
    settings = _settings()
    address = host or settings.host
    ports = port or sorted({settings.port, *DEFAULT_PORTS})
    probes = probe_ports(address, ports, timeout_s=timeout_s or settings.connect_timeout_s)
    rows = [output.to_jsonable(p.__dict__) for p in probes]
    answering = [p.port for p in probes if p.answers]
    if not answering:
        raise ConnectionFailedError(
            f"no Nanonis TCP interface answers on {address} ports {ports}; start the "
            "instrument's TCP Programming Interface or `atomlab sim spm`",
            host=address,
            probes=rows,
        )

    def human(console: Console) -> None:
        for p in probes:
            if p.answers:
                line = (
                    f"{address}:{p.port}  ok    connect {p.connect_ms:.2f} ms, "
                    f"Bias.Get {p.round_trip_ms:.3f} ms"
                )
            else:
                line = f"{address}:{p.port}  --    {p.error}"
            console.print(line, markup=False, highlight=False)

    output.emit({"host": address, "answering": answering, "ports": rows}, human=human)
