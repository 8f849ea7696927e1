"""The figure functions: valid plotly figures (checked by plotly's own schema), JSON-safe, and
drawing what the data says."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from atomlab.swarm import AgentState, AgentStatus, Defect, DefectStatus, Point
from atomlab.trajectory import ActionEvent, SignalWindow
from atomlab.views import (
    COLORWAY,
    engine_progress_figure,
    metric_curves,
    policy_comparison_figure,
    scan_heatmap,
    signal_window_figure,
    strip_chart_figure,
    swarm_map_figure,
    telemetry_figure,
    telemetry_value,
)
from atomlab.views.swarm import DEFECT_COLORS


def valid(figure: dict[str, Any]) -> dict[str, Any]:
    """Assert plotly accepts ``figure`` and that it is strict JSON; return it round-tripped."""
    import plotly.graph_objects as go

    go.Figure(figure)  # raises ValueError on any property plotly.js does not know
    return json.loads(json.dumps(figure, allow_nan=False))


def make_window(**changes: Any) -> SignalWindow:
    base: dict[str, Any] = {
        "start_dt_s": 0.5,
        "end_dt_s": 5.5,
        "complete": True,
        "partial_reason": None,
        "missed_ticks": 0,
        "labels": ("Z Position", "Tunnel Current"),
        "units": {"Z Position": "m", "Tunnel Current": "A"},
        "sample_idx": [5, 6, 7],
        "dt_s": [0.5, 0.6, 0.7],
        "values": {
            "Z Position": [1e-9, float("nan"), 3e-9],
            "Tunnel Current": [1e-10, 2e-10, None],
        },
    }
    base.update(changes)
    return SignalWindow(**base)


ACTION = ActionEvent(
    action_idx=3,
    sample_idx=6,
    dt_s=3.0,
    end_dt_s=3.5,
    detected_at_utc="2026-01-01T00:00:03Z",
    spec_label="Bias",
    old_value=0.1,
    new_value=0.3,
    delta=0.2,
    steps=2,
    source="external",
    window_start_dt_s=0.5,
    window_end_dt_s=6.0,
)


def test_signal_window_has_a_panel_per_signal_with_the_action_shaded_on_each() -> None:
    fig = valid(signal_window_figure(make_window(), ACTION))
    assert [t["name"] for t in fig["data"]] == ["Z Position", "Tunnel Current"]
    assert fig["data"][0]["x"] == [0.5, 0.6, 0.7]
    assert fig["data"][0]["y"] == [1e-9, None, 3e-9]  # NaN is a gap, never invalid JSON
    assert fig["data"][1]["yaxis"] == "y2"
    assert fig["layout"]["xaxis2"]["matches"] == "x"  # zooming one panel zooms both
    shapes = fig["layout"]["shapes"]
    assert [(s["x0"], s["x1"], s["yref"]) for s in shapes] == [
        (3.0, 3.5, "y domain"),
        (3.0, 3.5, "y2 domain"),
    ]
    assert "Bias 0.1 → 0.3" in fig["layout"]["title"]["text"]
    assert fig["layout"]["yaxis"]["title"]["text"] == "m"  # the unit on the axis ...
    panel_labels = [a["text"] for a in fig["layout"]["annotations"]]
    assert panel_labels == ["<b>Z Position</b>", "<b>Tunnel Current</b>"]  # ... the name above


def test_a_command_action_is_titled_with_its_command_and_arguments() -> None:
    pulse = dataclasses.replace(
        ACTION,
        kind="command",
        spec_label="Bias.Pulse",
        old_value=None,
        new_value=None,
        delta=None,
        steps=1,
        end_dt_s=3.0,
        source="self",
        command="Bias.Pulse",
        args={"bias_pulse_width_s": 0.05, "bias_value_v": 3.0, "wait_until_done": 1},
    )
    for action in (pulse, dataclasses.asdict(pulse)):  # the event or its JSON form
        title = valid(signal_window_figure(make_window(), action))["layout"]["title"]["text"]
        assert title == (
            "Action 3: Bias.Pulse(bias_pulse_width_s=0.05, bias_value_v=3, wait_until_done=1) "
            "sent at 3.00 s (self)"
        )
        assert "None" not in title


def test_a_partial_window_says_why_in_its_title_and_accepts_the_dict_form() -> None:
    window = make_window(complete=False, partial_reason="the run ended before the window end")
    fig = valid(signal_window_figure(window.to_dict(), None))
    assert "partial: the run ended before the window end" in fig["layout"]["title"]["text"]
    assert "shapes" not in fig["layout"]


def test_strip_chart_starts_empty_with_one_trace_per_signal_in_order() -> None:
    fig = valid(strip_chart_figure(["A", "B", "C"], {"A": "V"}))
    assert [t["name"] for t in fig["data"]] == ["A", "B", "C"]
    assert all(t["x"] == [] for t in fig["data"])
    assert fig["layout"]["uirevision"]  # live appends keep the user's zoom


def test_scan_heatmap_puts_row_zero_at_the_top_in_nm_and_blanks_unscanned_pixels() -> None:
    image = np.arange(12, dtype=float).reshape(3, 4)
    image[2, :] = np.nan  # the last line is not scanned yet
    fig = valid(scan_heatmap(image, width_nm=20, height_nm=10, title="Z", unit="m"))
    trace = fig["data"][0]
    assert trace["x"][0] == pytest.approx(-7.5) and trace["x"][-1] == pytest.approx(7.5)
    assert trace["y"][0] > trace["y"][-1]  # row 0 is the top of the frame
    assert trace["y"][0] == pytest.approx(10 / 3)
    assert trace["z"][0] == [0.0, 1.0, 2.0, 3.0]
    assert trace["z"][2] == [None] * 4
    assert fig["layout"]["yaxis"]["scaleanchor"] == "x"  # a 20 x 10 nm frame looks 2:1


def test_a_large_scan_is_binned_to_block_means() -> None:
    image = np.ones((1024, 1024))
    image[:2, :2] = [[1.0, 3.0], [np.nan, 5.0]]  # the first 2 x 2 block: mean of finite = 3
    fig = valid(scan_heatmap(image, width_nm=100, height_nm=100))
    z = fig["data"][0]["z"]
    assert len(z) == 512 and len(z[0]) == 512
    assert z[0][0] == pytest.approx(3.0)
    assert z[5][5] == pytest.approx(1.0)


def test_no_scan_image_is_an_empty_figure_that_says_so() -> None:
    fig = valid(scan_heatmap([], width_nm=1, height_nm=1))
    assert fig["data"] == []
    assert "no scan image" in fig["layout"]["annotations"][0]["text"]


def test_metric_curves_overlay_runs_in_one_panel_per_metric_with_a_colour_per_run() -> None:
    class MetricPoint:
        def __init__(self, step: int, value: float) -> None:
            self.step, self.value = step, value

    series = {
        "run-a": {"loss": [MetricPoint(0, 1.0), MetricPoint(1, 0.5)], "return": [(0, 3.0)]},
        "run-b": {"loss": [{"step": 0, "value": 2.0}, {"step": 1, "value": float("inf")}]},
    }
    fig = valid(metric_curves(series))
    panels = {(t["meta"]["run"], t["meta"]["metric"]): t for t in fig["data"]}
    assert set(panels) == {
        ("run-a", "loss"),
        ("run-a", "return"),
        ("run-b", "loss"),
        ("run-b", "return"),
    }
    assert panels["run-a", "loss"]["y"] == [1.0, 0.5]
    assert panels["run-b", "loss"]["y"] == [2.0, None]
    assert panels["run-b", "return"]["x"] == []  # a run without that metric: an empty curve
    assert panels["run-a", "loss"]["xaxis"] == panels["run-b", "loss"]["xaxis"]
    assert panels["run-a", "loss"]["xaxis"] != panels["run-a", "return"]["xaxis"]
    colours = {
        run: {t["line"]["color"] for (r, _), t in panels.items() if r == run}
        for run in ("run-a", "run-b")
    }
    assert colours == {"run-a": {COLORWAY[0]}, "run-b": {COLORWAY[1]}}
    assert sum(t["showlegend"] for t in fig["data"]) == 2  # one legend entry per run


def test_metric_curves_without_metrics_say_so() -> None:
    fig = valid(metric_curves({"run-a": {}}))
    assert "no metrics" in fig["layout"]["annotations"][0]["text"]


def test_telemetry_value_reads_what_each_trace_draws() -> None:
    samples = [
        {"dt_s": 0.0, "proc_cpu_pct": 5.0, "gpus": [{"index": 1, "util_pct": 40.0}]},
        {"dt_s": 1.0, "sys_mem_pct": 50.0, "gpus": []},
    ]
    fig = telemetry_figure(samples)
    for trace in fig["data"]:
        assert trace["y"] == [telemetry_value(s, trace["meta"]["field"]) for s in samples]
    assert telemetry_value(samples[0], "gpus.1.util_pct") == 40.0


def test_telemetry_shows_a_gpu_panel_only_when_samples_have_gpus() -> None:
    samples = [
        {"dt_s": 0.0, "proc_cpu_pct": 50.0, "sys_cpu_pct": 60.0, "proc_rss_mb": 100.0},
        {"dt_s": 1.0, "proc_cpu_pct": 70.0, "sys_cpu_pct": 80.0, "proc_rss_mb": 110.0},
    ]
    fig = valid(telemetry_figure(samples))
    fields = [t["meta"]["field"] for t in fig["data"]]
    assert "proc_cpu_pct" in fields and not any(f.startswith("gpus.") for f in fields)
    cpu = next(t for t in fig["data"] if t["meta"]["field"] == "proc_cpu_pct")
    assert cpu["x"] == [0.0, 1.0] and cpu["y"] == [50.0, 70.0]
    samples[1]["gpus"] = [{"index": 0, "util_pct": 93.0}]
    fig = valid(telemetry_figure(samples))
    gpu = next(t for t in fig["data"] if t["meta"]["field"] == "gpus.0.util_pct")
    assert gpu["y"] == [None, 93.0]


def test_policy_comparison_has_a_bar_per_policy_on_each_measure() -> None:
    rows = [
        {"policy": "bc", "score": 0.8, "good_line_fraction": 0.9, "recovery_s": 3.0, "crashes": 0},
        {
            "policy": "random",
            "score": 0.1,
            "good_line_fraction": 0.2,
            "recovery_s": 30.0,
            "crashes": 4,
        },
    ]
    fig = valid(policy_comparison_figure(rows))
    by_name = {t["name"]: t for t in fig["data"]}
    assert set(by_name) == {"score", "good lines (fraction)", "recovery (s)", "crashes"}
    assert by_name["crashes"]["x"] == ["bc", "random"]
    assert by_name["crashes"]["y"] == [0.0, 4.0]


def test_swarm_map_groups_defects_by_status_and_reads_records_in_tenth_nm_units() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    defects = [
        Defect("d1", Point(42, 70), "vacancy", 5, now, "c", status=DefectStatus.QUEUED),
        Defect("d2", Point(10, 10), "vacancy", 5, now, "c", status=DefectStatus.COMPLETED),
        {"defect_id": "d3", "position": {"x": 1.5, "y": 2.5}, "status": "failed"},
    ]
    agents = [
        AgentState("agent-01", Point(5, 5), AgentStatus.MOVING),
        {"agent_id": "agent-02", "position": {"x": 3.0, "y": 4.0}, "status": "dead"},
    ]
    paths = {"agent-01": [(0.0, 0.0), (0.5, 0.5)], "agent-02": [(3.0, 4.0)]}
    fig = valid(
        swarm_map_figure(
            defects,
            agents,
            paths,
            bounds_nm=((0, 20), (0, 20)),
            no_go_zones=[{"x": [6.0, 6.5], "y": [3.0, 4.0]}],
            halted="proximity alert agent-01/agent-02 at 0.4 nm",
        )
    )
    assert set(DEFECT_COLORS) == {s.value for s in DefectStatus}
    by_status = {t["meta"]["status"]: t for t in fig["data"] if t["meta"]["kind"] == "defects"}
    assert by_status["queued"]["x"] == [4.2] and by_status["queued"]["y"] == [7.0]
    assert by_status["failed"]["text"] == ["d3"]
    assert by_status["repairing"]["x"] == []  # every status has its legend entry
    agents_trace = next(t for t in fig["data"] if t["meta"]["kind"] == "agents")
    assert agents_trace["x"] == [0.5, 3.0]
    assert agents_trace["customdata"] == ["moving", "dead"]
    assert agents_trace["marker"]["color"][1] == "#d62728"  # a dead agent is red
    path_traces = [t for t in fig["data"] if t["meta"]["kind"] == "path"]
    assert [t["meta"]["agent_id"] for t in path_traces] == ["agent-01"]  # one point is no path
    assert fig["layout"]["shapes"][0]["x0"] == 6.0
    assert "HALTED" in fig["layout"]["annotations"][0]["text"]


def test_engine_progress_splits_each_run_into_ok_rejected_and_to_do() -> None:
    runs = [
        {"name": "triage", "ok": 7, "rejected": 1, "items_total": 10},
        {"name": "old", "ok": 3, "rejected": 0, "items_total": None},
    ]
    fig = valid(engine_progress_figure(runs))
    bars = {t["name"]: t["x"] for t in fig["data"]}
    assert bars == {"ok": [7, 3], "rejected": [1, 0], "to do": [2, 0]}


@pytest.mark.parametrize(
    "figure",
    [
        strip_chart_figure([], {}),
        engine_progress_figure([]),
        telemetry_figure([]),
        policy_comparison_figure([]),
        swarm_map_figure([], []),
    ],
)
def test_empty_inputs_still_make_valid_figures(figure: dict[str, Any]) -> None:
    valid(figure)
