"""User metrics, params and artifacts of a run (contract C1): stored, validated, shown."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from atomlab.core.clock import FakeClock
from atomlab.core.errors import InvalidInputError
from atomlab.core.settings import TrackingSettings
from atomlab.tracking import RunTracker, read_metrics, read_run


def tracker(home: Path, clock: FakeClock, **kw: object) -> RunTracker:
    return RunTracker(
        "learn",
        ["train", "eval"],
        home=home,
        clock=clock,
        settings=TrackingSettings(gpu=False),
        monitor=False,
        handle_signals=False,
        telemetry=False,
        **kw,  # type: ignore[arg-type]
    )


def test_metrics_are_stored_one_json_line_each_with_steps(home):
    clock = FakeClock()
    with tracker(home, clock) as run, run.step("train"):
        for epoch in range(3):
            clock.advance(2.0)
            run.log_metric("bc/loss", 1.0 / (epoch + 1))
        run.log_metric("bc/val_loss", 0.7, step=10)
        run.log_metrics({"bc/val_loss": 0.6, "eval/score": 0.9})
    lines = [json.loads(x) for x in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(x["name"], x["step"]) for x in lines] == [
        ("bc/loss", 0),
        ("bc/loss", 1),
        ("bc/loss", 2),
        ("bc/val_loss", 10),
        ("bc/val_loss", 11),
        ("eval/score", 0),
    ]
    first = lines[0]
    assert set(first) == {"name", "value", "step", "at", "dt_s"}
    assert first["dt_s"] == pytest.approx(2.0) and first["at"].endswith("Z")
    series = read_metrics(run.run_dir)
    assert [p.value for p in series["bc/loss"]] == pytest.approx([1.0, 0.5, 1 / 3])
    assert [p.step for p in series["bc/val_loss"]] == [10, 11]


@pytest.mark.parametrize(
    ("name", "value", "step", "field"),
    [
        ("bad name", 1.0, None, "name"),
        ("", 1.0, None, "name"),
        ("x" * 129, 1.0, None, "name"),
        ("ok", math.nan, None, "value"),
        ("ok", math.inf, None, "value"),
        ("ok", True, None, "value"),
        ("ok", "0.5", None, "value"),
        ("ok", 1.0, -1, "step"),
        ("ok", 1.0, 1.5, "step"),
        ("ok", 1.0, 2, "step"),  # not after the last logged step (2)
    ],
)
def test_bad_metrics_are_refused_and_nothing_is_written(home, name, value, step, field):
    clock = FakeClock()
    with tracker(home, clock) as run:
        run.log_metric("ok", 0.0, step=2)
        before = (run.run_dir / "metrics.jsonl").read_bytes()
        with pytest.raises(InvalidInputError) as info:
            run.log_metric(name, value, step=step)
        assert info.value.details["field"] == field
        with pytest.raises(InvalidInputError):  # a batch is all or nothing
            run.log_metrics({"fine": 1.0, name: value}, step=step)
        assert (run.run_dir / "metrics.jsonl").read_bytes() == before


def test_params_merge_into_run_json_and_refuse_non_json(home):
    clock = FakeClock()
    with tracker(home, clock) as run:
        run.log_params({"seed": 0, "preset": "demo"})
        run.log_params({"lr": 3e-4, "layers": [64, 64]})
        with pytest.raises(InvalidInputError, match="not a JSON value"):
            run.log_params({"bad": math.nan})
        with pytest.raises(InvalidInputError, match="not a JSON value"):
            run.log_params({"bad": object()})
    stored = read_run(run.run_dir).params
    assert stored == {"seed": 0, "preset": "demo", "lr": 3e-4, "layers": [64, 64]}


def test_artifacts_are_copied_hashed_and_listed(home, tmp_path):
    clock = FakeClock()
    source = tmp_path / "model.bin"
    source.write_bytes(b"\x00weights" * 1000)
    with tracker(home, clock) as run:
        stored = run.log_artifact(source, kind="model")
        assert stored == run.run_dir / "artifacts" / "model.bin"
        assert stored.read_bytes() == source.read_bytes()
        source.write_bytes(b"v2")
        run.log_artifact(source, kind="model")  # the same name again replaces it
        run.log_artifact(source, name="copy.bin")
        with pytest.raises(InvalidInputError, match="folder"):
            run.log_artifact(tmp_path)
        with pytest.raises(InvalidInputError, match="no such file"):
            run.log_artifact(tmp_path / "missing.bin")
        with pytest.raises(InvalidInputError, match="artifact name"):
            run.log_artifact(source, name="../escape")
    artifacts = read_run(run.run_dir).model_dump(mode="json")["artifacts"]
    assert artifacts == [
        {
            "name": "model.bin",
            "path": "artifacts/model.bin",
            "bytes": 2,
            "sha256": hashlib.sha256(b"v2").hexdigest(),
            "kind": "model",
        },
        {
            "name": "copy.bin",
            "path": "artifacts/copy.bin",
            "bytes": 2,
            "sha256": hashlib.sha256(b"v2").hexdigest(),
            "kind": None,
        },
    ]
    assert not list((run.run_dir / "artifacts").glob(".*"))  # no temporary file left


def test_runs_show_and_summary_show_params_metrics_artifacts(cli, home, tmp_path):
    clock = FakeClock()
    model = tmp_path / "policy.pt"
    model.write_bytes(b"abc")
    with tracker(home, clock) as run:
        run.log_params({"seed": 7})
        for loss in (0.9, 0.4, 0.6):
            run.log_metric("bc/loss", loss)
        run.log_artifact(model, kind="model")
    shown = cli("runs", "show", run.run_id, "--json").json["run"]
    assert shown["params"] == {"seed": 7}
    assert shown["metrics"]["bc/loss"] == {
        "last": 0.6,
        "last_step": 2,
        "min": 0.4,
        "max": 0.9,
        "count": 3,
    }
    assert shown["artifacts"][0]["name"] == "policy.pt"
    text = cli("runs", "show", run.run_id).stdout
    assert "seed = 7" in text and "bc/loss: 0.6 @ step 2 / 0.4 / 0.9, 3" in text
    assert "policy.pt: artifacts/policy.pt (3 bytes, model" in text
    summary = cli("runs", "summary", run.run_id, "--json").json
    assert summary["metrics"]["bc/loss"]["min"] == 0.4 and summary["params"] == {"seed": 7}
    assert "bc/loss" in cli("runs", "summary", run.run_id).stdout
    markdown = cli("runs", "export", run.run_id, "--format", "md").stdout
    assert "| bc/loss | 0.6 | 2 | 0.4 | 0.9 | 3 |" in markdown
