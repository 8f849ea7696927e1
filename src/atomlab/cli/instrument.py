"""``atomlab instrument``: read signals and specs, and write specs through the guard."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from atomlab.cli import output
from atomlab.core.errors import AtomlabError, ConnectionFailedError, InvalidInputError
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


MAX_MAGNITUDE = 1e12
"""No STM quantity in SI units (V, A, m, s, Hz) comes near this: a bigger number is a typo."""


def _numbers(**values: float | None) -> None:
    """Refuse NaN, infinities and absurd magnitudes (exit 3) before anything is connected."""
    for option, value in values.items():
        if value is not None and not (math.isfinite(value) and abs(value) <= MAX_MAGNITUDE):
            shown = option if option.isupper() else "--" + option.replace("_", "-")
            raise InvalidInputError(
                f"{shown} {value!r} is not a usable number (finite, at most "
                f"{MAX_MAGNITUDE:g} in magnitude, in the catalog's SI unit)",
                field=option.lower(),
            )


def _new_client(host: str | None, port: int | None, timeout_s: float | None) -> NanonisClient:
    """The client, not yet connected: its constructor refuses a bad host, port or timeout."""
    settings = _settings()
    return NanonisClient(  # an explicit 0 or "" is the user's value (refused), not "default"
        settings.host if host is None else host,
        settings.port if port is None else port,
        connect_timeout_s=settings.connect_timeout_s,
        call_timeout_s=settings.call_timeout_s if timeout_s is None else timeout_s,
    )


@contextmanager
def _client(host: str | None, port: int | None, timeout_s: float | None) -> Iterator[NanonisClient]:
    with _new_client(host, port, timeout_s) as client:
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
    client = _new_client(**conn)  # the connection options are checked even without --read
    if read:
        with client:
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
    _numbers(VALUE=value)
    client = _new_client(host, port, timeout_s)
    cat = _catalog(catalog)
    entry = cat.spec(name)
    with client:
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
    _numbers(START=start, END=end, STEP=step, interval_s=interval_s)
    client = _new_client(host, port, timeout_s)
    cat = _catalog(catalog)
    entry = cat.spec(name)
    with client:
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
    address = settings.host if host is None else host
    ports = port or sorted({settings.port, *DEFAULT_PORTS})
    wait = settings.connect_timeout_s if timeout_s is None else timeout_s
    probes = probe_ports(address, ports, timeout_s=wait)
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


spectrum_app = typer.Typer(
    name="spectrum",
    help="Point spectroscopy: I(V) and dI/dV, or I(z), through the guard.",
    no_args_is_help=True,
)
app.add_typer(spectrum_app, name="spectrum")

PointsOption = Annotated[int, typer.Option("--points", help="Points per sweep (2..10000).")]
SweepsOption = Annotated[int, typer.Option("--sweeps", help="Sweeps to average (1..100).")]
BackwardOption = Annotated[bool, typer.Option("--backward", help="Also sweep back.")]
SettlingOption = Annotated[
    float, typer.Option("--settling-s", help="Wait at each point before measuring.")
]
IntegrationOption = Annotated[
    float, typer.Option("--integration-s", help="Averaging time at each point.")
]
ChannelOption = Annotated[
    list[str] | None,
    typer.Option(
        "--channel",
        help="A signal to record, by name (repeat; default Current). See Signals.InSlotsGet.",
    ),
]
OutputOption = Annotated[
    Path | None,
    typer.Option("--output", help="Also write the spectrum as CSV (one column per channel)."),
]


@spectrum_app.command("bias", context_settings=NUMBER_ARGS)
def spectrum_bias(
    start: Annotated[float, typer.Option("--start", help="First bias (V).")] = -1.0,
    end: Annotated[float, typer.Option("--end", help="Last bias (V).")] = 1.0,
    points: PointsOption = 201,
    sweeps: SweepsOption = 1,
    backward: BackwardOption = False,
    settling_s: SettlingOption = 0.002,
    integration_s: IntegrationOption = 0.01,
    z_offset_m: Annotated[
        float, typer.Option("--z-offset-m", help="Move the tip before sweeping (+ retracts).")
    ] = 0.0,
    lockin: Annotated[
        float | None,
        typer.Option(
            "--lockin-amplitude-v",
            help="Modulate the bias with lock-in 1 and record dI/dV (LI Demod 1 X / amplitude).",
        ),
    ] = None,
    channel: ChannelOption = None,
    csv_output: OutputOption = None,
    plan_only: PlanOnlyOption = False,
    allow_writes: AllowWritesOption = False,
    who: WhoOption = None,
    host: HostOption = None,
    port: PortOption = None,
    timeout_s: TimeoutOption = None,
    catalog: CatalogOption = None,
    json_out: output.JsonOption = False,
) -> None:
    """I(V) at the feedback's height (Z held, bias put back); exit 2 if the guard refuses."""
    from atomlab.instrument.spectroscopy import BiasSweep

    output.use_json(json_out)
    _numbers(
        start=start,
        end=end,
        settling_s=settling_s,
        integration_s=integration_s,
        z_offset_m=z_offset_m,
        lockin_amplitude_v=lockin,
    )
    sweep = BiasSweep(
        start_v=start,
        end_v=end,
        points=points,
        sweeps=sweeps,
        backward=backward,
        settling_s=settling_s,
        integration_s=integration_s,
        z_offset_m=z_offset_m,
        channels=tuple(channel or ("Current (A)",)),
        lockin_amplitude_v=lockin,
    )
    _run_spectrum("bias", sweep, csv_output, plan_only, allow_writes, who, host, port, timeout_s,
                  catalog)  # fmt: skip


@spectrum_app.command("z", context_settings=NUMBER_ARGS)
def spectrum_z(
    offset_m: Annotated[
        float, typer.Option("--offset-m", help="Where the sweep starts, from the feedback's Z.")
    ] = 0.0,
    distance_m: Annotated[
        float, typer.Option("--distance-m", help="How far it goes (+ retracts, - approaches).")
    ] = 5e-10,
    points: PointsOption = 128,
    sweeps: SweepsOption = 1,
    backward: BackwardOption = False,
    settling_s: SettlingOption = 0.002,
    integration_s: IntegrationOption = 0.01,
    retract_current_a: Annotated[
        float | None,
        typer.Option(
            "--retract-current-a", help="Stop and retract when |I| exceeds this (default 5 nA)."
        ),
    ] = 5e-9,
    channel: ChannelOption = None,
    csv_output: OutputOption = None,
    plan_only: PlanOnlyOption = False,
    allow_writes: AllowWritesOption = False,
    who: WhoOption = None,
    host: HostOption = None,
    port: PortOption = None,
    timeout_s: TimeoutOption = None,
    catalog: CatalogOption = None,
    json_out: output.JsonOption = False,
) -> None:
    """I(z) and the apparent barrier height; exit 2 if the guard refuses."""
    from atomlab.instrument.spectroscopy import ZSweep

    output.use_json(json_out)
    _numbers(
        offset_m=offset_m,
        distance_m=distance_m,
        settling_s=settling_s,
        integration_s=integration_s,
        retract_current_a=retract_current_a,
    )
    sweep = ZSweep(
        offset_m=offset_m,
        distance_m=distance_m,
        points=points,
        sweeps=sweeps,
        backward=backward,
        settling_s=settling_s,
        integration_s=integration_s,
        channels=tuple(channel or ("Current (A)",)),
        retract_current_a=retract_current_a,
    )
    _run_spectrum("z", sweep, csv_output, plan_only, allow_writes, who, host, port, timeout_s,
                  catalog)  # fmt: skip


def _run_spectrum(
    kind: str,
    sweep: Any,
    csv_path: Path | None,
    plan_only: bool,
    allow_writes: bool,
    who: str | None,
    host: str | None,
    port: int | None,
    timeout_s: float | None,
    catalog: Path | None,
) -> None:
    from atomlab.instrument.spectroscopy import (
        Spectroscopy,
        SpectrumPlan,
        barrier_height_ev,
    )

    client = _new_client(host, port, timeout_s)
    cat = _catalog(catalog)
    if csv_path is not None:
        _check_output_path(csv_path)
    with client:
        spectroscopy = Spectroscopy(client, _guard(client, cat, allow_writes, who))
        taken = (spectroscopy.bias if kind == "bias" else spectroscopy.z)(
            sweep, plan_only=plan_only
        )
    if isinstance(taken, SpectrumPlan):
        plan = taken.to_dict()

        def human_plan(console: Console) -> None:
            console.print(f"{kind} spectrum plan (nothing sent):", markup=False, highlight=False)
            for step in plan["commands"]:
                console.print(f"  {step['command']} {step['args']}", markup=False, highlight=False)

        output.emit(plan, human=human_plan)
        return
    summary: dict[str, Any] = {
        "kind": taken.kind,
        "command": taken.command,
        "command_id": taken.command_id,
        "points": taken.points,
        "sweep_channel": taken.sweep_channel,
        # NaN (a point a stopped or retracted sweep never measured) is null in JSON
        "channels": {
            name: [v if v == v else None for v in column] for name, column in taken.channels.items()
        },
        "parameters": taken.parameters,
        "settings": taken.settings,
    }
    if kind == "z":
        try:
            summary["barrier_height_ev"] = barrier_height_ev(
                taken.sweep_values, taken["Current (A)"]
            )
        except AtomlabError:
            summary["barrier_height_ev"] = None
    if csv_path is not None:
        _write_csv(csv_path, taken.channels)
        summary["output"] = str(csv_path)

    def human(console: Console) -> None:
        values = taken.sweep_values
        console.print(
            f"{kind} spectrum: {taken.points} points, {taken.sweep_channel} "
            f"{values[0]:g} .. {values[-1]:g}",
            markup=False,
            highlight=False,
        )
        for name, column in taken.channels.items():
            if name == taken.sweep_channel:
                continue
            finite = [v for v in column if v == v]
            low, high = (min(finite), max(finite)) if finite else (float("nan"),) * 2
            console.print(f"  {name}: {low:.4g} .. {high:.4g}", markup=False, highlight=False)
        if summary.get("barrier_height_ev") is not None:
            console.print(
                f"  apparent barrier height: {summary['barrier_height_ev']:.3f} eV",
                markup=False,
                highlight=False,
            )
        if csv_path is not None:
            console.print(f"  written to {csv_path}", markup=False, highlight=False)

    output.emit(summary, human=human)


def _check_output_path(path: Path) -> None:
    if path.is_dir():
        raise InvalidInputError(
            f"--output {str(path)[:200]!r} is a directory; give a file name", field="output"
        )
    if not path.parent.is_dir():
        raise InvalidInputError(
            f"--output {str(path)[:200]!r}: the folder {str(path.parent)[:200]!r} does not exist",
            field="output",
        )


def _write_csv(path: Path, channels: dict[str, list[float]]) -> None:
    """Write atomically: a half-written spectrum file is never left behind."""
    import csv
    import io
    import os

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(list(channels))
    writer.writerows(zip(*channels.values(), strict=True))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise InvalidInputError(
            f"cannot write --output {str(path)[:200]!r}: {exc.strerror}", field="output"
        ) from None
    finally:
        if tmp.exists():
            tmp.unlink()
