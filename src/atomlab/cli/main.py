"""Entry point of the ``atomlab`` command: global options, error mapping, command groups."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from atomlab import __version__
from atomlab.cli import output
from atomlab.cli.command_tree import HELP_OPTION_NAMES, build_command
from atomlab.cli.doctor import doctor
from atomlab.cli.user_errors import as_user_error
from atomlab.core.errors import AtomlabError, ExitCode

app = typer.Typer(
    name="atomlab",
    help="Run a scanning-probe lab with software agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": list(HELP_OPTION_NAMES)},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"atomlab {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def root(
    json_out: output.JsonOption = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="YAML settings file (default: ./atomlab.yaml if present)."),
    ] = None,
    home: Annotated[
        Path | None, typer.Option("--home", help="Data home (overrides ATOMLAB_HOME).")
    ] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    ] = None,
    log_format: Annotated[
        str | None, typer.Option("--log-format", help="console or json (logs go to stderr).")
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """atomlab: instrument, simulator, trajectories, runs, LLM engine and swarm service."""
    overrides: dict[str, Any] = {}
    if home is not None:
        overrides["home"] = home
    log: dict[str, Any] = {}
    if log_level is not None:
        log["level"] = log_level.upper()
    if log_format is not None:
        log["format"] = log_format
    if log:
        overrides["log"] = log
    previous = output.state()
    state = output.CliState(
        json=json_out or previous.json,
        debug=debug or previous.debug,
        config_path=config,
        overrides=overrides,
    )
    output.reset_state(state)
    # structlog loads here, not at import: `atomlab --help` never gets this far
    from atomlab.core.logging import configure_logging

    if log or config is not None:
        settings = state.loaded.settings
        configure_logging(settings.log.level, settings.log.format)
    else:
        configure_logging("WARNING", "console")


app.command("doctor")(doctor)

# Command group -> the module whose ``app`` implements it. Groups are imported only when used:
# importing all of them (numpy, httpx, the engine, the swarm service ...) costs over a second,
# which every command would otherwise pay before doing anything.
COMMAND_GROUPS: dict[str, str] = {
    "config": "atomlab.cli.config",
    "dashboard": "atomlab.cli.dashboard",
    "demo": "atomlab.cli.demo",
    "engine": "atomlab.cli.engine",
    "instrument": "atomlab.cli.instrument",
    "learn": "atomlab.cli.learn",
    "runs": "atomlab.cli.runs",
    "sim": "atomlab.cli.sim",
    "swarm": "atomlab.cli.swarm",
    "trajectory": "atomlab.cli.trajectory",
}
# What `atomlab --help` says of each group, so listing the groups imports none of them (the help
# text of a group that is not here comes from importing it). tests/cli/test_main.py keeps these
# equal to each group's own help.
GROUP_HELP: dict[str, str] = {
    "config": "Inspect the effective settings.",
    "dashboard": "The web dashboard: instrument, runs, swarm and engine, live (docs/dashboard.md).",
    "engine": "Run LLM batch pipelines with cache, resume and metrics.",
    "instrument": "Talk to a Nanonis SPM controller or the atomlab simulator.",
    "learn": "Learn an STM operator's behaviour from recorded trajectories (imitation pipeline).",
    "runs": "Track long pipelines: run commands as steps, watch them, list and inspect runs.",
    "sim": "Run simulated instruments.",
    "swarm": "The QNMS swarm repair service.",
    "trajectory": "Record every signal and operator action into SQLite; query and export "
    "recordings.",
}
_GLOBAL_OPTIONS_WITH_VALUE = frozenset({"--config", "--home", "--log-level", "--log-format"})
_TOP_LEVEL_COMMANDS = frozenset({"doctor"})
_registered: set[str] = set()
_standing_in: set[str] = set()


def register_groups(names: Iterable[str] = COMMAND_GROUPS) -> None:
    """Import and attach the named command groups (all of them by default)."""
    for name in names:
        if name in _standing_in:  # a listing's stand-in: replace it by the real group
            app.registered_groups[:] = [g for g in app.registered_groups if g.name != name]
            _standing_in.discard(name)
            _registered.discard(name)
        if name not in _registered:
            module = importlib.import_module(COMMAND_GROUPS[name])
            app.add_typer(module.app, name=name)
            _registered.add(name)


def list_groups() -> None:
    """Attach every group for a listing (help, an unknown command): a stand-in with the group's
    help text where GROUP_HELP has it (importing every group takes over a second), else the
    group itself."""
    for name in COMMAND_GROUPS:
        if name in _registered:
            continue
        if name in GROUP_HELP:
            app.add_typer(typer.Typer(help=GROUP_HELP[name]), name=name)
            _standing_in.add(name)
            _registered.add(name)
        else:
            register_groups([name])


def _requested_command(args: list[str]) -> str | None:
    """The first command-line word that is not a global option: a group or a command name."""
    skip_value = False
    for arg in args:
        if skip_value:
            skip_value = False
            continue
        if arg == "--":
            return None
        if arg.startswith("-"):
            skip_value = arg in _GLOBAL_OPTIONS_WITH_VALUE
            continue
        return arg
    return None


_built: dict[frozenset[str], Any] = {}


def _command() -> Any:
    """The command tree of the groups registered so far, built once per set of groups (a process
    running several commands, such as the test suite, would otherwise rebuild it every time)."""
    key = frozenset(_registered) | frozenset(f"stand-in:{name}" for name in _standing_in)
    if key not in _built:
        _built[key] = build_command(app)
    return _built[key]


def run(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` and return the exit code instead of exiting."""
    args = list(sys.argv[1:] if argv is None else argv)
    head = args[: args.index("--")] if "--" in args else args
    output.reset_state(output.CliState(json="--json" in head, debug="--debug" in head))
    command = _requested_command(head)
    try:
        # Help, an unknown command and no command at all list every group (list_groups).
        if command in COMMAND_GROUPS:
            register_groups([command])
        elif command not in _TOP_LEVEL_COMMANDS and "--version" not in head:
            list_groups()
        result = _command().main(args=args, prog_name="atomlab", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        output.emit_error("interrupted", "interrupted", int(ExitCode.INTERRUPTED))
        return int(ExitCode.INTERRUPTED)
    except typer.TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            return int(ExitCode.OK)  # the help text was printed; asking for it is no error
        code = int(ExitCode.INVALID_INPUT)
        output.emit_error("usage_error", exc.format_message(), code)
        return code
    except AtomlabError as exc:
        if output.state().debug:
            raise
        return output.emit_atomlab_error(exc)
    except KeyboardInterrupt:
        output.emit_error("interrupted", "interrupted by the operator", int(ExitCode.INTERRUPTED))
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:
        if output.state().debug:
            raise
        mapped = as_user_error(exc)  # a user's mistake that slipped past the command's checks
        if mapped is not None:
            return output.emit_atomlab_error(mapped)
        message = f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"
        output.emit_error("unexpected", message, int(ExitCode.UNEXPECTED))
        return int(ExitCode.UNEXPECTED)
    return result if isinstance(result, int) else 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
