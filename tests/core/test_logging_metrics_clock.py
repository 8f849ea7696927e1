from __future__ import annotations

import io
import json
import logging

import pytest

from atomlab.core.clock import FakeClock, SystemClock, utc_iso
from atomlab.core.errors import (
    AtomlabError,
    CircuitOpenError,
    ConfigError,
    ExitCode,
    PolicyRefusedError,
    exit_code_for,
)
from atomlab.core.logging import (
    configure_logging,
    correlation_scope,
    current_correlation_id,
    get_logger,
)
from atomlab.core.metrics import Metrics, exposition, metric_name, new_registry


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_logs_carry_the_correlation_id_inside_its_scope_only():
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    log = get_logger("test")
    with correlation_scope("abc123") as cid:
        assert cid == current_correlation_id() == "abc123"
        log.info("inside", step=1)
        logging.getLogger("stdlib").warning("from the standard library")
    log.info("outside")
    lines = json_lines(stream)
    assert lines[0]["event"] == "inside"
    assert lines[0]["correlation_id"] == "abc123"
    assert lines[0]["step"] == 1
    assert lines[1]["correlation_id"] == "abc123"
    assert "correlation_id" not in lines[2]
    assert current_correlation_id() is None


def test_log_level_filters_lower_levels():
    stream = io.StringIO()
    configure_logging("WARNING", "json", stream=stream)
    get_logger().info("hidden")
    get_logger().warning("shown")
    assert [line["event"] for line in json_lines(stream)] == ["shown"]


def test_console_format_is_human_readable():
    stream = io.StringIO()
    configure_logging("INFO", "console", stream=stream)
    with correlation_scope("c-1"):
        get_logger().info("hello", answer=42)
    text = stream.getvalue()
    assert "hello" in text and "answer=42" in text and "c-1" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_cli_logs_go_to_stderr_never_stdout(cli):
    result = cli("--log-format", "json", "--log-level", "DEBUG", "config", "show", "--json")
    assert result.exit_code == 0
    json.loads(result.stdout)  # stdout holds exactly the one JSON object


def test_metric_names_follow_the_rule():
    assert metric_name("swarm", "queue_depth") == "atomlab_swarm_queue_depth"
    with pytest.raises(ValueError, match="snake case"):
        metric_name("Swarm", "x")
    with pytest.raises(ValueError):
        metric_name("swarm", "queue-depth")


def test_metrics_are_per_registry_and_reused_by_name(tmp_path):
    first, second = Metrics("engine"), Metrics("engine")
    first.counter("items_total", "Items.", labels=("status",)).labels(status="ok").inc(3)
    assert first.counter("items_total", "Items.", labels=("status",)) is first.counter(
        "items_total", "Items.", labels=("status",)
    )
    assert b"atomlab_engine_items_total" not in second.exposition()
    first.histogram("latency_seconds", "Latency.", buckets=(0.1, 1.0)).observe(0.5)
    target = tmp_path / "metrics" / "engine.prom"
    first.write_textfile(target)
    text = target.read_text()
    assert 'atomlab_engine_items_total{status="ok"} 3.0' in text
    assert 'atomlab_engine_latency_seconds_bucket{le="1.0"} 1.0' in text
    with pytest.raises(ValueError, match="already exists"):
        first.gauge("items_total", "Items.")


def test_exposition_of_a_fresh_registry_is_empty():
    assert exposition(new_registry()) == b""


def test_fake_clock_sleeps_advance_time_at_once():
    clock = FakeClock(start=100.0)
    before = clock.now()
    clock.sleep(30)
    assert clock.monotonic() == 130.0
    assert (clock.now() - before).total_seconds() == 30.0
    assert utc_iso(clock.now()).endswith("Z")
    with pytest.raises(ValueError):
        clock.advance(-1)


async def test_fake_clock_async_sleep():
    clock = FakeClock()
    await clock.sleep_async(2.5)
    assert clock.monotonic() == 2.5
    assert clock.sleeps == [2.5]


def test_system_clock_is_monotonic_and_utc():
    clock = SystemClock()
    assert clock.monotonic() <= clock.monotonic()
    assert clock.now().utcoffset().total_seconds() == 0


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (PolicyRefusedError("no"), 2),
        (ConfigError("bad"), 3),
        (CircuitOpenError("x", 1.0), 4),
        (KeyboardInterrupt(), 130),
        (RuntimeError("?"), 1),
    ],
)
def test_exit_codes(error, code):
    assert exit_code_for(error) == code


def test_error_details_appear_in_the_envelope_payload():
    error = AtomlabError("broken", field="x")
    assert error.to_dict() == {"type": "error", "message": "broken", "details": {"field": "x"}}
    assert ExitCode.TERMINATED == 143


def test_default_stream_follows_sys_stderr_even_after_it_is_replaced(monkeypatch):
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    configure_logging("INFO", "json")
    get_logger().info("one")
    first.close()  # the old stream is gone, as after a test's capture ends
    monkeypatch.setattr("sys.stderr", second)
    get_logger().info("two")
    logging.getLogger("late").warning("three")
    assert [line["event"] for line in json_lines(second)] == ["two", "three"]
