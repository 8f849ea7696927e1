"""`atomlab trajectory ...` as a user runs it: staged config, run rules, queries, export, plot."""

from __future__ import annotations

import csv
import json
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from atomlab.instrument import NanonisClient, load_catalog
from atomlab.trajectory import InstrumentSource, Monitor, MonitorConfig, Sample, open_store


def _refuse_non_json(constant: str) -> None:
    raise AssertionError(f"{constant} is not JSON")


def _stage(cli, *args):
    result = cli("trajectory", "monitor", "config", "set", *args)
    assert result.exit_code == 0, result.stdout + result.stderr
    return result.json["config"]


def test_config_set_show_clear_round_trip(cli, isolated_home):
    shown = cli("trajectory", "monitor", "config", "show").json
    assert shown["staged"] is False and shown["config"]["run_name"] == ""
    assert shown["config"]["interval_s"] == 0.1 and shown["config"]["rotate_entries"] == 6000
    assert shown["config"]["action_window_s"] == 2.5
    config = _stage(
        cli,
        "--run-name",
        "tip-prep 1",
        "--signals",
        "Tunnel Current, Z Position",
        "--specs",
        "Bias,Z Setpoint",
        "--interval-s",
        "0.05",
        "--tolerance",
        "Bias=0.001",
        "--coalesce-s",
        "0.3",
    )
    assert config["signals"] == ["Tunnel Current", "Z Position"]
    assert config["tolerances"] == {"Bias": 0.001} and config["coalesce_s"] == 0.3
    shown = cli("trajectory", "monitor", "config", "show").json
    assert shown["staged"] is True and shown["config"]["run_name"] == "tip-prep 1"
    assert Path(shown["config_path"]) == isolated_home / "trajectory" / "monitor-config.json"
    cleared = cli("trajectory", "monitor", "config", "clear").json
    assert cleared["cleared"] is True and cleared["config"]["run_name"] == ""
    assert cli("trajectory", "monitor", "config", "show").json["config"]["interval_s"] == 0.1


def test_a_relative_db_path_is_staged_absolute(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _stage(cli, "--db-path", "rel.sqlite")
    assert Path(config["db_path"]) == tmp_path / "rel.sqlite"
    monkeypatch.chdir(tmp_path.parent)  # queries from elsewhere still find it
    assert Path(
        cli("trajectory", "monitor", "config", "show").json["config"]["db_path"]
    ).is_absolute()


def test_a_config_path_that_is_a_folder_or_unwritable_exits_3_naming_it(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    never = [blocker / "monitor.json", tmp_path / ("x" * 10_000)]  # under a file; name too long
    commands = [["set", "--run-name", "x"], ["show"], ["clear"]]
    before = sorted(tmp_path.rglob("*"))
    for path in [tmp_path, *never]:
        for command in commands:
            result = cli("trajectory", "monitor", "config", *command, "--config-path", str(path))
            assert result.exit_code == 3, (command, str(path)[:80], result.stdout)
            assert result.json["error"]["details"]["field"] == "config_path"
            assert "--config-path" in result.json["error"]["message"] or path == tmp_path
    assert blocker.read_text() == "x" and sorted(tmp_path.rglob("*")) == before


def test_a_db_path_where_no_database_can_be_made_is_refused_when_staged(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for path in (blocker / "sub" / "t.sqlite", tmp_path / ("x" * 10_000), tmp_path):
        result = cli("trajectory", "monitor", "config", "set", "--db-path", str(path))
        assert result.exit_code == 3, (str(path)[:80], result.stdout)
        error = result.json["error"]
        assert error["details"]["field"] == "db_path" and "--db-path" in error["message"]
        assert len(error["message"]) < 500  # a long path is cut
    assert cli("trajectory", "monitor", "config", "show").json["staged"] is False
    assert blocker.read_text() == "x"


def test_windows_are_bounded_by_the_settings_limit_of_a_week(cli):
    config = _stage(cli, "--action-window-s", "604800", "--coalesce-s", "604800")
    assert config["action_window_s"] == config["coalesce_s"] == 604800
    for option in ("--action-window-s", "--coalesce-s"):
        for value in ("604801", "1e308"):
            result = cli("trajectory", "monitor", "config", "set", option, value)
            assert result.exit_code == 3, (option, value, result.stdout)
            assert "less than or equal to 604800" in result.json["error"]["message"]
    assert cli("trajectory", "monitor", "config", "show").json["config"]["coalesce_s"] == 604800


def test_an_explicit_config_path_is_used(cli, tmp_path):
    path = tmp_path / "elsewhere" / "monitor.json"
    _stage(cli, "--config-path", str(path), "--run-name", "x")
    assert path.is_file()
    shown = cli("trajectory", "monitor", "config", "show", "--config-path", str(path)).json
    assert shown["config"]["run_name"] == "x"
    assert cli("trajectory", "monitor", "config", "show").json["config"]["run_name"] == ""


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--interval-s", "0"], "interval_s"),
        (["--interval-s", "-1"], "interval_s"),
        (["--interval-s", "1e-9"], "interval_s"),  # only missed ticks, never a sample
        (["--interval-s", "nan"], "interval_s"),
        (["--interval-s", "inf"], "interval_s"),
        (["--action-window-s", "nan"], "action_window_s"),
        (["--coalesce-s", "inf"], "coalesce_s"),
        (["--rotate-entries", "0"], "rotate_entries"),
        (["--rotate-entries", str(2**70)], "rotate_entries"),  # past any SQLite integer
        (["--action-window-s", "1e308"], "action_window_s"),
        (["--coalesce-s", "1e308"], "coalesce_s"),
        (["--action-window-s", "-2"], "action_window_s"),
        (["--run-name", "bad\nname"], "run_name"),
        (["--run-name", "x" * 200], "run_name"),
        (["--signals", " , "], "signals"),
        (["--specs", "Bias,Bias"], "specs"),
        (["--tolerance", "Bias"], "tolerances"),
        (["--tolerance", "Bias=-1"], "tolerances"),
        (["--tolerance", "Tip Speed=1"], "tolerances"),
        (["--flush-interval-s", "0"], "flush_interval_s"),
    ],
)
def test_bad_config_values_exit_3_name_the_field_and_stage_nothing(cli, args, field):
    result = cli("trajectory", "monitor", "config", "set", *args)
    assert result.exit_code == 3
    body = json.loads(result.stdout, parse_constant=_refuse_non_json)  # strict JSON, no NaN
    assert body["ok"] is False and body["error"]["details"]["field"] == field
    assert "config set" in body["error"]["message"] or "--tolerance" in body["error"]["message"]
    assert cli("trajectory", "monitor", "config", "show").json["staged"] is False


def test_run_refuses_an_empty_run_name(cli):
    result = cli("trajectory", "monitor", "run", "--max-samples", "1")
    assert result.exit_code == 3
    assert "config set" in result.json["error"]["message"]


def test_run_records_then_clears_the_run_name_and_refuses_a_duplicate(cli, sim, isolated_home):
    port = str(sim.ports[0])
    _stage(cli, "--run-name", "first", "--interval-s", "0.02")
    prom = isolated_home / "trajectory.prom"
    result = cli(
        "trajectory",
        "monitor",
        "run",
        "--port",
        port,
        "--max-samples",
        "5",
        "--metrics-file",
        str(prom),
    )
    assert result.exit_code == 0, result.stdout
    summary = result.json
    assert summary["status"] == "completed" and summary["samples"] == 5
    assert "atomlab_trajectory_samples_total 5.0" in prom.read_text()
    assert "recording run 'first'" in result.stderr
    assert cli("trajectory", "monitor", "config", "show").json["config"]["run_name"] == ""
    db = isolated_home / "trajectories.sqlite"
    assert open_store(db).run("first").samples == 5

    _stage(cli, "--run-name", "first")
    again = cli("trajectory", "monitor", "run", "--port", port, "--max-samples", "5")
    assert again.exit_code == 3 and "already holds a run named 'first'" in again.stdout
    assert [r.name for r in open_store(db).runs()] == ["first"]  # nothing written
    # refused before it started: the staged name stays (the message says to stage a new one)
    assert cli("trajectory", "monitor", "config", "show").json["config"]["run_name"] == "first"


def test_a_run_refused_before_it_starts_keeps_the_staged_run_name(cli, unused_tcp_port, tmp_path):
    _stage(cli, "--run-name", "unreachable")
    result = cli("trajectory", "monitor", "run", "--port", str(unused_tcp_port), "--duration", "1")
    assert result.exit_code == 5, result.stdout
    for bad in (
        ["--metrics-file", str(tmp_path)],  # a folder: refused before recording
        ["--duration", "inf"],
        ["--duration", "nan"],
        ["--port", "70000"],
        ["--max-samples", str(2**70)],
        ["--host", "x" * 10_000],
    ):
        refused = cli("trajectory", "monitor", "run", "--port", str(unused_tcp_port), *bad)
        assert refused.exit_code == 3, (bad[0], refused.stdout)
        assert len(refused.stdout.strip().splitlines()) == 1 and not refused.json["ok"]
    assert (
        cli("trajectory", "monitor", "config", "show").json["config"]["run_name"] == "unreachable"
    )


def test_list_signals_and_list_specs_are_two_lists_with_units_and_limits(cli):
    signals = cli("trajectory", "monitor", "list-signals").json
    specs = cli("trajectory", "monitor", "list-specs").json
    signal_labels = {row["label"] for row in signals["signals"]}
    spec_labels = {row["label"] for row in specs["specs"]}
    assert signal_labels and spec_labels and not signal_labels & spec_labels
    bias = next(row for row in specs["specs"] if row["label"] == "Bias")
    assert (bias["unit"], bias["min"], bias["max"]) == ("V", -5.0, 5.0)
    current = next(row for row in signals["signals"] if row["label"] == "Tunnel Current")
    assert current["unit"] == "A" and current["signal"] == "Current (A)"


@pytest.fixture
def recorded(sim, isolated_home):
    """A run with two external Bias changes, recorded into the default database."""
    db = isolated_home / "trajectories.sqlite"
    config = MonitorConfig(
        run_name="with-actions",
        signals=("Tunnel Current", "Z Position"),
        specs=("Bias",),
        interval_s=0.02,
        action_window_s=0.1,
        db_path=db,
    )
    changes = threading.Event()
    sampled = threading.Event()
    count = {"actions": 0}

    def on_record(record):
        if isinstance(record, Sample):  # not a missed tick: the baseline is really taken
            sampled.set()
        if getattr(record, "spec_label", None) == "Bias":
            count["actions"] += 1
            if count["actions"] == 2:
                changes.set()

    with NanonisClient("127.0.0.1", sim.ports[0]) as client, open_store(db, read_only=False) as st:
        monitor = Monitor(InstrumentSource(client, load_catalog()), config, st, on_record=on_record)
        thread = threading.Thread(target=monitor.run, kwargs={"duration_s": 60})
        thread.start()
        try:
            assert sampled.wait(30)  # the baseline is taken: changes from now on are actions
            with NanonisClient("127.0.0.1", sim.ports[0]) as other:
                other.call("Bias.Set", {"bias_v": 0.3})
                while count["actions"] < 1 and thread.is_alive():
                    changes.wait(0.01)
                other.call("Bias.Set", {"bias_v": 0.5})
            assert changes.wait(30)  # a failure bound (10 s was too short under load)
        finally:
            monitor.stop("completed", "test done")
            thread.join(10)
    return db


def test_action_list_and_show_with_window_and_plot(cli, recorded, tmp_path):
    listed = cli("trajectory", "action", "list").json
    assert listed["run_name"] == "with-actions" and listed["count"] == 2
    assert [a["new_value"] for a in listed["actions"]] == pytest.approx([0.3, 0.5])
    png = tmp_path / "action-1.png"
    shown = cli(
        "trajectory",
        "action",
        "show",
        "--action-idx",
        "1",
        "--with-signal-window",
        "--plot",
        str(png),
        "--db-path",
        str(recorded),
    ).json
    window = shown["signal_window"]
    assert shown["action"]["action_idx"] == 1
    assert window["count"] == len(window["dt_s"]) > 0
    assert set(window["values"]) == {"Tunnel Current", "Z Position"}
    assert window["start_dt_s"] <= min(window["dt_s"]) and max(window["dt_s"]) <= window["end_dt_s"]
    assert isinstance(window["complete"], bool)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = cli("trajectory", "action", "show", "--action-idx", "9")
    assert missing.exit_code == 3 and "has no action 9" in missing.json["error"]["message"]


def test_runs_list_and_show(cli, recorded):
    runs = cli("trajectory", "runs", "list").json
    assert runs["count"] == 1 and runs["runs"][0]["name"] == "with-actions"
    shown = cli("trajectory", "runs", "show", "--run-name", "with-actions").json
    assert shown["run"]["status"] == "completed" and shown["run"]["config"]["specs"] == ["Bias"]
    assert shown["run"]["instrument"]["versions"]["version"] == "Generic 5"
    assert shown["run"]["atomlab_version"]
    assert [s["label"] for s in shown["signals"]] == ["Tunnel Current", "Z Position"]
    assert shown["specs"][0]["unit"] == "V"
    assert cli("trajectory", "runs", "show", "--run-name", "nope").exit_code == 3


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_writes_signals_specs_and_actions(cli, recorded, tmp_path, fmt):
    out = tmp_path / "export"
    result = cli(
        "trajectory", "export", "--run-name", "with-actions", "--format", fmt, "--out", str(out)
    )
    assert result.exit_code == 0, result.stdout
    files = {k: Path(v) for k, v in result.json["files"].items()}
    assert set(files) == {"signals", "specs", "actions", "meta"}
    run = open_store(recorded).run()
    anchor = datetime.fromisoformat(run.started_at_utc.replace("Z", "+00:00"))
    meta = json.loads(files["meta"].read_text())
    assert meta["run"]["name"] == "with-actions" and meta["instrument"] == run.instrument
    assert meta["units"]["signals"]["Tunnel Current"] == "A"
    assert meta["units"]["signals"]["time_utc"] == "UTC"
    if fmt == "csv":
        with files["signals"].open() as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == run.samples and "Tunnel Current" in rows[0]
        first = rows[-1]
        stamp = datetime.fromisoformat(first["time_utc"].replace("Z", "+00:00"))
        assert stamp == anchor + timedelta(seconds=float(first["dt_s"]))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        signals = pq.read_table(files["signals"])
        assert signals.num_rows == run.samples
        assert signals.schema.field("time_utc").type == pa.timestamp("us", tz="UTC")
        assert signals.schema.field("Tunnel Current").metadata == {b"unit": b"A"}
        schema_meta = signals.schema.metadata
        assert json.loads(schema_meta[b"atomlab.run"])["name"] == "with-actions"
        assert json.loads(schema_meta[b"atomlab.instrument"]) == run.instrument
        assert json.loads(schema_meta[b"atomlab.units"])["Z Position"] == "m"
        row = signals.slice(signals.num_rows - 1, 1).to_pylist()[0]
        assert row["time_utc"] == anchor + timedelta(microseconds=round(row["dt_s"] * 1e6))
        actions = pq.read_table(files["actions"])
        assert actions.num_rows == 2
        assert actions.schema.field("detected_at_utc").type == pa.timestamp("us", tz="UTC")
        assert actions.column("new_value").to_pylist() == pytest.approx([0.3, 0.5])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in files.values())
    bad = cli("trajectory", "export", "--run-name", "with-actions", "--format", "xlsx")
    assert bad.exit_code == 3


def test_export_and_plot_into_an_unusable_place_exit_3_naming_the_option(cli, recorded, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    export = cli("trajectory", "export", "--run-name", "with-actions", "--out", str(a_file))
    assert export.exit_code == 3 and export.json["error"]["details"]["field"] == "out"
    show = ["trajectory", "action", "show", "--run-name", "with-actions", "--action-idx", "0"]
    for plot in (a_file / "x.png", tmp_path):
        result = cli(*show, "--plot", str(plot))
        assert result.exit_code == 3 and result.json["error"]["details"]["field"] == "plot"
    assert a_file.read_text() == "not a folder"


def test_queries_on_a_missing_database_exit_3_and_create_nothing(cli, tmp_path):
    missing = tmp_path / "nothing-here.sqlite"
    for args in (["runs", "list"], ["action", "list"], ["action", "show", "--action-idx", "0"]):
        result = cli("trajectory", *args, "--db-path", str(missing))
        assert result.exit_code == 3 and result.json["error"]["type"] == "not_found"
    assert not missing.exists()


def test_unknown_signals_and_specs_are_refused_when_staged(cli):
    before = cli("trajectory", "monitor", "config", "show").json["config"]
    for option, value in (
        ("--signals", "Tunnel Curent"),  # a typo
        ("--signals", "Bias"),  # a spec
        ("--specs", "Tunnel Current"),  # a signal
        ("--specs", "Bias, Warp Drive"),
        ("--signals", "x" * 10_000),
    ):
        result = cli("trajectory", "monitor", "config", "set", option, value)
        assert result.exit_code == 3, (option, value[:20], result.stdout)
        assert result.json["error"]["details"]["field"] == option.strip("-")
    assert cli("trajectory", "monitor", "config", "show").json["config"] == before
    ok = cli("trajectory", "monitor", "config", "set", "--signals", "Tunnel Current, Input 3 (V)")
    assert ok.exit_code == 0 and ok.json["config"]["signals"][1] == "Input 3 (V)"


def test_a_failed_start_up_creates_no_run_row(cli, sim, isolated_home):
    _stage(cli, "--run-name", "typo", "--signals", "Input 99 (V)")  # not on this instrument
    result = cli("trajectory", "monitor", "run", "--port", str(sim.ports[0]), "--max-samples", "3")
    assert result.exit_code == 3 and "list-signals" in result.json["error"]["message"]
    assert open_store(isolated_home / "trajectories.sqlite").runs() == []


def test_without_the_optional_extras_export_and_plot_exit_4_with_the_install_hint(
    cli, recorded, tmp_path, monkeypatch
):
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if atomlab[parquet] were not installed
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = cli(
        "trajectory",
        "export",
        "--run-name",
        "with-actions",
        "--format",
        "parquet",
        "--out",
        str(tmp_path / "x"),
    )
    assert result.exit_code == 4 and "atomlab[parquet]" in result.json["error"]["message"]
    plot = tmp_path / "a.png"
    shown = cli("trajectory", "action", "show", "--action-idx", "0", "--plot", str(plot))
    assert shown.exit_code == 4 and "atomlab[plot]" in shown.json["error"]["message"]
    assert not plot.exists()


def test_a_signal_window_as_a_dataframe_with_absolute_times_and_units(recorded):
    pd = pytest.importorskip("pandas")
    with open_store(recorded) as store:
        action = store.action(1)
        frame = store.window_frame(action=1)
        same = store.signal_window(action.window_start_dt_s, action.window_end_dt_s).to_pandas()
        run = store.run()
    pd.testing.assert_frame_equal(frame, same)
    assert list(frame.columns) == ["sample_idx", "time_utc", "dt_s", "Tunnel Current", "Z Position"]
    assert str(frame["time_utc"].dtype) == "datetime64[us, UTC]"
    anchor = pd.Timestamp(run.started_at_utc)
    delta = (frame["time_utc"] - anchor).dt.total_seconds() - frame["dt_s"]
    assert delta.abs().max() < 1e-5
    assert frame.attrs["units"] == {"Tunnel Current": "A", "Z Position": "m"}
    assert frame.attrs["run_name"] == "with-actions" and isinstance(frame.attrs["complete"], bool)
    assert frame["dt_s"].between(action.window_start_dt_s, action.window_end_dt_s).all()


LONG = "x" * 10_000


def _one_error(result, code: int = 3) -> dict:
    assert result.exit_code == code, result.stdout + result.stderr
    assert len(result.stdout.strip().splitlines()) == 1  # exactly one JSON object
    body = json.loads(result.stdout)
    assert body["ok"] is False and body["exit_code"] == code
    assert "Traceback" not in result.stderr
    return body["error"]


def test_bad_input_to_the_query_commands_exits_3_without_a_traceback(cli, recorded, tmp_path):
    db = ["--db-path", str(recorded)]
    show = ["trajectory", "action", "show", *db]
    for idx in (str(2**70), "inf", "1e308", "-1"):
        _one_error(cli(*show, "--action-idx", idx))
    # the plot target is refused before the database is even opened
    missing_db = ["--db-path", str(tmp_path / "missing.sqlite")]
    error = _one_error(cli("trajectory", "action", "show", *missing_db, "--action-idx", "0",
                           "--plot", str(tmp_path)))  # fmt: skip
    assert error["details"]["field"] == "plot"
    for args in (
        ["trajectory", "runs", "list", "--db-path", LONG],
        ["trajectory", "runs", "show", *db, "--run-name", LONG],
        ["trajectory", "action", "list", *db, "--run-name", LONG],
        ["trajectory", "action", "list", *db, "--kind", "nope"],
        ["trajectory", "export", *db, "--run-name", LONG],
        ["trajectory", "export", *db, "--run-name", "with-actions", "--out", f"/{LONG}"],
        ["trajectory", "export", *db, "--run-name", "with-actions", "--format", LONG],
        ["trajectory", "monitor", "config", "show", "--config-path", LONG],
        ["trajectory", "monitor", "config", "set", "--config-path", f"/{LONG}/c.json"],
        ["trajectory", "monitor", "config", "set", "--tolerance", "Bias=inf"],
        ["trajectory", "action", "show", *db, "--action-idx", "0", "--plot", f"/{LONG}.png"],
    ):
        error = _one_error(cli(*args))
        assert len(error["message"]) < 1_000, args[:3]  # a long value is cut in the message
    _one_error(cli("trajectory", "monitor", "list-signals", "--catalog", LONG))


def test_every_trajectory_command_accepts_json(cli, recorded, tmp_path):
    db = ["--db-path", str(recorded)]
    for args in (
        ["monitor", "config", "show"],
        ["monitor", "config", "set", "--interval-s", "0.2"],
        ["monitor", "config", "clear"],
        ["monitor", "list-signals"],
        ["monitor", "list-specs"],
        ["runs", "list", *db],
        ["runs", "show", *db],
        ["action", "list", *db],
        ["action", "show", *db, "--action-idx", "0"],
        ["export", *db, "--run-name", "with-actions", "--out", str(tmp_path / "e")],
    ):
        result = cli("trajectory", *args, "--json")
        assert result.exit_code == 0, (args, result.stdout)
        assert len(result.stdout.strip().splitlines()) == 1 and result.json["ok"] is True


def test_a_setting_the_monitor_cannot_use_is_named_as_a_setting(cli, monkeypatch):
    # the settings allow a flush interval up to a week; the monitor commits at least every 60 s
    monkeypatch.setenv("ATOMLAB_TRAJECTORY__FLUSH_INTERVAL_S", "120")
    result = cli("trajectory", "monitor", "config", "show")
    assert result.exit_code == 3
    error = result.json["error"]
    assert error["details"]["field"] == "trajectory.flush_interval_s"
    assert "ATOMLAB_TRAJECTORY__FLUSH_INTERVAL_S" in error["message"]
    assert "config set" not in error["message"]  # staging cannot fix a setting
