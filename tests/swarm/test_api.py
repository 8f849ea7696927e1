"""The HTTP API on a fresh app per test: properties 2 and 3, errors, OpenAPI, metrics, restart."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from atomlab.core.logging import configure_logging
from atomlab.core.settings import AtomlabSettings, load_settings
from atomlab.swarm import create_app
from tests.swarm.harness import PROPERTY, operator_client


def _settings(home: Path, **swarm: Any) -> AtomlabSettings:
    return load_settings(overrides={"home": home, "swarm": swarm}, environ={}).settings


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with operator_client(create_app(_settings(tmp_path))) as test_client:
        yield test_client


def _defect(x: float = 1.2, y: float = 3.4, **extra: Any) -> dict[str, Any]:
    return {"x": x, "y": y, "z": 0.0, "defect_type": "vacancy", "severity": 5, **extra}


def test_health_answers_with_status_and_timestamp(client: TestClient) -> None:
    body = client.get("/health").json()
    assert body["status"] == "healthy"
    assert body["timestamp"].endswith("Z")
    assert body["link"]["connected"] is False


def test_sensor_data_is_acknowledged_with_202_and_the_defect_ids(client: TestClient) -> None:
    response = client.post("/api/sensor-data", json={"coordinates": [_defect(), _defect(2.0)]})
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 2 and len(body["defect_ids"]) == 2
    assert body["correlation_id"] == response.headers["x-correlation-id"]
    listed = client.get("/api/defects").json()
    assert [d["defect_id"] for d in listed] == body["defect_ids"]
    one = client.get(f"/api/defects/{body['defect_ids'][0]}").json()
    assert one["position"] == {"x": 1.2, "y": 3.4, "z": 0.0}


bad_values = st.one_of(
    st.integers(0, 199).flatmap(lambda u: st.integers(1, 9).map(lambda k: u / 10 + k / 100)),
    st.integers(201, 5000).map(lambda u: u / 10),
    st.integers(-5000, -1).map(lambda u: u / 10),
)


def test_property_2_invalid_input_rejection_422_names_the_field_and_nothing_is_queued(
    client: TestClient,
) -> None:
    """Property 2: an off-grid or out-of-bounds coordinate anywhere in a batch gets a 422 that
    names the field and the reason, and nothing of the batch is queued."""

    @PROPERTY
    @given(st.sampled_from("xy"), bad_values, st.integers(0, 3))
    def check(axis: str, value: float, index: int) -> None:
        batch = [_defect(1.0 + i / 10) for i in range(4)]
        batch[index][axis] = value
        before = len(client.get("/api/defects").json())
        response = client.post("/api/sensor-data", json={"coordinates": batch})
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert error["details"]["field"] == f"coordinates.{index}.{axis}"
        assert error["details"]["value"] == value
        assert (
            "grid" in error["details"]["constraint"] or "bounds" in error["details"]["constraint"]
        )
        assert len(client.get("/api/defects").json()) == before

    check()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"coordinates": []}, "coordinates"),
        ({"coordinates": [_defect(severity=11)]}, "coordinates.0.severity"),
        ({"coordinates": [{"x": 1.0, "y": 1.0}]}, "coordinates.0.severity"),
        ({"coordinates": [_defect(x="abc")]}, "coordinates.0.x"),
        ({"coordinates": [_defect(x=True)]}, "coordinates.0.x"),
        ({"coordinates": [_defect(severity=True)]}, "coordinates.0.severity"),
    ],
)
def test_malformed_bodies_get_the_same_error_format(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    response = client.post("/api/sensor-data", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == field


@pytest.mark.parametrize(("raw", "shown"), [("1e400", "inf"), ("-1e400", "-inf"), ("NaN", "nan")])
def test_non_finite_coordinates_get_a_422_naming_the_field(
    client: TestClient, raw: str, shown: str
) -> None:
    body = (
        '{"coordinates": [{"x": 1.0, "y": 1.0, "severity": 5}, {"x": %s, "y": 1.0, "severity": 5}]}'
    )
    response = client.post(
        "/api/sensor-data", content=body % raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert (details["field"], details["value"]) == ("coordinates.1.x", shown)
    assert client.get("/api/defects").json() == []


def test_a_body_that_is_not_json_is_a_400_naming_the_body(client: TestClient) -> None:
    response = client.post(
        "/api/sensor-data", content=b"not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "body"
    assert client.get("/api/defects").json() == []


def test_an_unexpected_error_still_carries_the_correlation_id(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    with operator_client(app, raise_server_exceptions=False) as client:
        response = client.get("/boom", headers={"X-Correlation-ID": "cid-boom"})
    assert response.status_code == 500
    error = response.json()["error"]
    assert (error["code"], error["correlation_id"]) == ("INTERNAL_ERROR", "cid-boom")
    assert response.headers["x-correlation-id"] == "cid-boom"


def test_unknown_ids_and_methods_get_the_structured_error(client: TestClient) -> None:
    missing = client.get("/api/defects/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "NOT_FOUND"
    assert missing.json()["error"]["correlation_id"] == missing.headers["x-correlation-id"]
    wrong = client.delete("/api/defects")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


def test_an_incoming_correlation_id_is_kept(client: TestClient) -> None:
    response = client.post(
        "/api/sensor-data", json={"coordinates": [_defect()]}, headers={"X-Correlation-ID": "abc"}
    )
    assert response.headers["x-correlation-id"] == "abc"
    assert response.json()["correlation_id"] == "abc"
    [defect] = client.get("/api/defects").json()
    assert defect["correlation_id"] == "abc"
    body = {"coordinates": [_defect(2.0)], "correlation_id": "scan-17"}
    assert client.post("/api/sensor-data", json=body).json()["correlation_id"] == "scan-17"


def test_property_3_operation_logging_every_request_and_ingest_is_logged_with_its_id(
    tmp_path: Path,
) -> None:
    """Property 3: every API request and every received datum leaves a JSON log line with a
    timestamp and the request's correlation id."""
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    try:
        with operator_client(create_app(_settings(tmp_path))) as client:
            ids = []
            for i in range(3):
                response = client.post("/api/sensor-data", json={"coordinates": [_defect(1.0 + i)]})
                ids.append(response.headers["x-correlation-id"])
            ids.append(client.get("/api/defects").headers["x-correlation-id"])
    finally:
        configure_logging("WARNING", "console")
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    requests = [line for line in lines if line["event"] == "http.request"]
    assert [line["correlation_id"] for line in requests] == ids
    assert all("timestamp" in line and line["status"] in (200, 202) for line in requests)
    ingests = requests[:3]  # each batch's line names what it did
    assert all(line["accepted"] == 1 and len(line["defect_ids"]) == 1 for line in ingests)


def test_openapi_schema_lists_every_endpoint_and_the_error_body(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for path in (
        "/health",
        "/metrics",
        "/api/sensor-data",
        "/api/defects",
        "/api/defects/{defect_id}",
        "/api/commands",
        "/api/commands/{command_id}",
        "/api/commands/distribute",
        "/api/agents",
    ):
        assert path in schema["paths"], path
    post = schema["paths"]["/api/sensor-data"]["post"]
    assert "202" in post["responses"]
    assert post["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ErrorBody"
    )
    assert "SensorDataIn" in schema["components"]["schemas"]
    # every 422 the schema promises is the ErrorBody the handlers really send
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            error = operation["responses"].get("422")
            if error is not None:
                ref = error["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorBody"), (method, path)
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    health = schema["paths"]["/health"]["get"]["responses"]["200"]["content"]
    assert health["application/json"]["schema"]["$ref"].endswith("/HealthOut")
    assert "text/plain" in schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


def test_metrics_are_prometheus_text_with_swarm_names(client: TestClient) -> None:
    client.post("/api/sensor-data", json={"coordinates": [_defect()]})
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    assert 'atomlab_swarm_defects_total{outcome="detected"} 1.0' in response.text
    assert "atomlab_swarm_link_connected 0.0" in response.text


def test_two_apps_in_one_process_do_not_share_metrics(tmp_path: Path) -> None:
    with operator_client(create_app(_settings(tmp_path / "a"))) as a:
        a.post("/api/sensor-data", json={"coordinates": [_defect()]})
        with operator_client(create_app(_settings(tmp_path / "b"))) as b:
            assert 'outcome="detected"} 1.0' not in b.get("/metrics").text


def _link_up(client: TestClient, agents: dict[str, tuple[float, float]]) -> None:
    coordinator = client.app.state.swarm.coordinator  # type: ignore[attr-defined]
    coordinator.handle_event(
        "link_up",
        {
            "agents": [
                {"agent_id": a, "position": {"x": x, "y": y}, "status": "idle"}
                for a, (x, y) in agents.items()
            ]
        },
    )


def test_distribute_dispatches_and_commands_and_agents_are_queryable(client: TestClient) -> None:
    _link_up(client, {"a0": (0.0, 0.0)})
    client.post("/api/sensor-data", json={"coordinates": [_defect()]})
    body = client.post("/api/commands/distribute").json()
    commands = client.get("/api/commands").json()
    if body["dispatched"] == 0:  # the background dispatcher may have been first
        assert len(commands) == 1
    [command] = commands
    assert command["status"] == "pending" and command["action"] == "repair"
    assert client.get(f"/api/commands/{command['command_id']}").json() == command
    [agent] = client.get("/api/agents").json()
    assert agent["agent_id"] == "a0" and agent["current_command"] == command["command_id"]
    assert agent["status"] == "moving"


def test_restart_resumes_queued_and_in_flight_work_from_the_database(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with operator_client(create_app(settings)) as first:
        _link_up(first, {"a0": (0.0, 0.0)})
        ids = first.post(
            "/api/sensor-data", json={"coordinates": [_defect(), _defect(9.0, 9.0, severity=1)]}
        ).json()["defect_ids"]
        first.post("/api/commands/distribute")
        [in_flight] = first.get("/api/commands").json()
    assert (tmp_path / "swarm.sqlite").exists()
    app = create_app(settings)
    with operator_client(app) as second:
        defects = {d["defect_id"]: d for d in second.get("/api/defects").json()}
        assert set(defects) == set(ids)
        assert defects[in_flight["defect_id"]]["status"] == "repairing"
        [other] = [d for d in ids if d != in_flight["defect_id"]]
        assert defects[other]["status"] == "queued"
        assert second.get(f"/api/commands/{in_flight['command_id']}").json()["status"] == "pending"
        _link_up(second, {"a0": (0.0, 0.0)})
        second.post("/api/commands/distribute")
        link = app.state.swarm.link
        deadline = time.monotonic() + 30.0  # the resend crosses to the server's event loop
        while link.pending < 1 and time.monotonic() < deadline:
            second.get("/health")
        assert link.pending >= 1  # the in-flight command waits for the simulator
        commands = second.get("/api/commands").json()
        assert [c["command_id"] for c in commands] == [in_flight["command_id"]]  # not run twice


def test_a_restart_knows_where_each_agent_was_last_heard(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with operator_client(create_app(settings)) as first:
        _link_up(first, {"a0": (0.0, 0.0)})
        first.post("/api/sensor-data", json={"coordinates": [_defect(6.0, 6.0)]})
        first.post("/api/commands/distribute")
        report = {"agent_id": "a0", "position": {"x": 4.1, "y": 4.0}, "status": "moving"}
        coordinator = first.app.state.swarm.coordinator  # type: ignore[attr-defined]
        coordinator.handle_event("agent_status", {"agents": [report]})
    with operator_client(create_app(settings)) as second:
        [agent] = second.get("/api/agents").json()
        assert agent["position"] == {"x": 4.1, "y": 4.0, "z": 0.0}


def test_an_e_stop_stays_in_force_across_a_restart_until_resumed(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    app = create_app(settings)
    with operator_client(app):
        app.state.swarm.coordinator.halt("agents a0 and a1 reported 0.40 nm apart")
    with operator_client(create_app(settings)) as second:
        health = second.get("/health").json()
        assert health["halted"] is True
        assert health["halt_reason"] == "agents a0 and a1 reported 0.40 nm apart"
        second.post("/api/sensor-data", json={"coordinates": [_defect()]})
        _link_up(second, {"a0": (0.0, 0.0)})
        assert second.post("/api/commands/distribute").json()["dispatched"] == 0
        resumed = second.post("/api/agents/resume").json()
        assert resumed["previous_reason"] == "agents a0 and a1 reported 0.40 nm apart"
    with operator_client(create_app(settings)) as third:
        assert third.get("/health").json()["halted"] is False


def test_the_llm_planner_is_asked_only_when_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    with operator_client(create_app(_settings(tmp_path / "a"))) as auto:
        assert auto.get("/health").json()["planner"] == "heuristic"
    with operator_client(create_app(_settings(tmp_path / "b", llm_planner="on"))) as forced:
        assert forced.get("/health").json()["planner"] == "llm+heuristic"
