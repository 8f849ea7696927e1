"""Start-up: `atomlab --version` and `atomlab instrument get` answer on the fast path, without
Typer, Rich, pydantic, YAML, structlog or numpy, and exactly as the full command line would.

No timing is asserted here (benchmarks/instrument.py measures it); what is guarded is what gets
imported, in a fresh interpreter, and that both paths print the same bytes and exit codes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

import atomlab
from atomlab.cli import fastpath
from atomlab.cli.main import run as full_run
from atomlab.instrument import catalog_index
from atomlab.sim import Disturbances, SimulatorThread, start_simulator_in_thread

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("typer", "click", "rich", "pydantic", "pydantic_settings", "yaml", "structlog", "numpy")
PROBE = """
import json, sys
watched = set(json.loads(sys.argv[2]))
sys.argv = ["atomlab", *json.loads(sys.argv[1])]
from atomlab.cli.entry import main
try:
    main()
except SystemExit as exc:
    code = exc.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & watched)
sys.stderr.write("\\nLOADED " + json.dumps({"heavy": heavy, "code": code}) + "\\n")
"""


def probe(args: list[str], env: dict[str, str] | None = None) -> tuple[dict[str, object], str]:
    """Run the console entry point in a fresh interpreter; what it loaded, and its stdout."""
    environment = {k: v for k, v in os.environ.items() if not k.upper().startswith("ATOMLAB_")}
    environment.update(env or {})
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )
    line = done.stderr.rsplit("LOADED ", 1)[1]
    return json.loads(line), done.stdout


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with start_simulator_in_thread(seed=0, ports=[0], disturbances=Disturbances.none()) as s:
        yield s


def test_the_version_is_the_packages_and_costs_no_import() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert atomlab.__version__ == pyproject["project"]["version"]
    loaded, out = probe(["--version"])
    assert out == f"atomlab {atomlab.__version__}\n"
    assert loaded == {"heavy": [], "code": 0}


def test_instrument_get_loads_nothing_heavy(sim: SimulatorThread) -> None:
    loaded, out = probe(["instrument", "get", "bias", "--json", "--port", str(sim.ports[0])])
    assert loaded == {"heavy": [], "code": 0}
    assert json.loads(out) == {
        "ok": True,
        "name": "bias_v",
        "label": "Bias",
        "unit": "V",
        "value": 0.1,
    }


def test_a_setting_from_the_environment_takes_the_full_path(sim: SimulatorThread) -> None:
    loaded, out = probe(
        ["instrument", "get", "bias", "--json"],
        {"ATOMLAB_INSTRUMENT__PORT": str(sim.ports[0])},
    )
    assert loaded["code"] == 0 and "typer" in loaded["heavy"]  # honoured, the slow way
    assert json.loads(out)["value"] == 0.1


def test_the_fast_path_defaults_are_the_settings_defaults() -> None:
    from atomlab.core.settings import InstrumentSettings

    defaults = InstrumentSettings()
    assert (defaults.host, defaults.port) == (fastpath.DEFAULT_HOST, fastpath.DEFAULT_PORT)
    assert defaults.connect_timeout_s == fastpath.DEFAULT_CONNECT_TIMEOUT_S
    assert defaults.call_timeout_s == fastpath.DEFAULT_CALL_TIMEOUT_S
    assert defaults.catalog_path is None


@pytest.mark.parametrize(
    "tail",
    [
        ["bias", "--json"],
        ["bias"],
        ["Z Setpoint", "--json"],
        ["zctrl_on"],
        ["Scan.FrameGet", "--json"],
        ["Scan.FrameGet"],
        ["no_such_signal", "--json"],
        ["no_such_signal"],
        ["bias", "--json", "--timeout-s", "inf"],
        ["bias", "--host", "h" * 400, "--json"],
    ],
)
def test_both_paths_print_the_same(
    tail: list[str], sim: SimulatorThread, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["instrument", "get", *tail, "--port", str(sim.ports[0])]
    fast_code = fastpath.run(args)
    fast = capsys.readouterr()
    full_code = full_run(args)
    full = capsys.readouterr()
    assert fast_code is not None, "the fast path took this one"
    assert (fast_code, fast.out, fast.err) == (full_code, full.out, full.err)


def test_no_instrument_answering_is_the_same_connection_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as free:
        port = str(free.getsockname()[1])
    args = ["--json", "instrument", "get", "bias", "--port", port]
    assert fastpath.run(args) == 5
    fast = capsys.readouterr().out
    assert full_run(args) == 5
    assert fast == capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [
        ["instrument", "get", "bias", "--help"],
        ["instrument", "get", "bias", "--catalog", "lab.yaml"],
        ["instrument", "get", "bias", "--port", "abc"],
        ["instrument", "get"],
        ["--config", "x.yaml", "instrument", "get", "bias"],
        ["--debug", "instrument", "get", "bias"],
        ["instrument", "set", "bias_v", "0.2"],
        ["--version", "--bogus"],
        ["config", "show"],
    ],
)
def test_anything_else_takes_the_full_path(args: list[str]) -> None:
    assert fastpath.run(args) is None


def test_a_settings_file_or_a_stale_index_takes_the_full_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["instrument", "get", "bias", "--port", "1"]
    (Path.cwd() / "atomlab.yaml").write_text("instrument: {port: 6502}\n")
    assert fastpath.run(args) is None
    (Path.cwd() / "atomlab.yaml").unlink()
    monkeypatch.setattr(catalog_index, "yaml_digest", lambda: "edited")
    assert fastpath.run(["instrument", "get", "bias", "--port", "1"]) is None


def test_the_catalog_index_matches_the_packaged_catalog() -> None:
    assert catalog_index.load_index() is not None, (
        "catalog.yaml changed: run `uv run python -m atomlab.instrument.catalog_index`"
    )
    assert catalog_index.main(["--check"]) == 0
