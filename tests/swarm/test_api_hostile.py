"""The HTTP API against what an outside client may send: no token, the wrong token, a form post,
a huge or deep body, invalid UTF-8, absurd numbers, absurd ids, methods it does not serve."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from atomlab.core.logging import configure_logging
from atomlab.core.settings import AtomlabSettings, load_settings
from atomlab.swarm import create_app
from tests.swarm.harness import operator_client

MUTATING = ["/api/sensor-data", "/api/commands/distribute", "/api/agents/resume"]
BATCH = {"coordinates": [{"x": 1.2, "y": 3.4, "severity": 5}]}


def _settings(home: Path, **swarm: Any) -> AtomlabSettings:
    return load_settings(overrides={"home": home, "swarm": swarm}, environ={}).settings


@pytest.fixture
def app(tmp_path: Path) -> Any:
    return create_app(_settings(tmp_path))


@pytest.fixture
def anonymous(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _defects(client: TestClient) -> list[dict[str, Any]]:
    body: list[dict[str, Any]] = client.get("/api/defects").json()
    return body


@pytest.mark.parametrize("path", MUTATING)
def test_mutating_routes_refuse_a_missing_or_wrong_token_with_401(
    anonymous: TestClient, path: str
) -> None:
    for headers in ({}, _bearer("not-the-token-at-all"), {"Authorization": "Basic YTpi"}):
        response = anonymous.post(path, json=BATCH, headers=headers)
        assert response.status_code == 401, (path, headers)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["error"]["code"] == "UNAUTHORIZED"
    assert _defects(anonymous) == []  # reads are public; nothing was queued


def test_an_ingest_token_may_ingest_but_not_control(app: Any, anonymous: TestClient) -> None:
    tokens = app.state.swarm.tokens
    ingest = _bearer(tokens.ingest)
    assert anonymous.post("/api/sensor-data", json=BATCH, headers=ingest).status_code == 202
    for path in ("/api/commands/distribute", "/api/agents/resume"):
        refused = anonymous.post(path, headers=ingest)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "FORBIDDEN"
    assert anonymous.post("/api/agents/resume", headers=_bearer(tokens.control)).status_code == 200
    # The link credential opens the link, nothing on HTTP.
    link = _bearer(tokens.link)
    assert anonymous.post("/api/sensor-data", json=BATCH, headers=link).status_code == 403


def test_a_read_token_makes_reads_private_except_health(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path, read_token="r" * 24))
    tokens = app.state.swarm.tokens
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200  # liveness probes need no token
        assert client.get("/openapi.json").status_code == 200
        for path in ("/api/defects", "/api/agents", "/api/commands", "/metrics"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers=_bearer("r" * 24)).status_code == 200, path
        # an operator token reads too
        assert client.get("/api/defects", headers=_bearer(tokens.ingest)).status_code == 200
        assert client.get("/health").json()["reads_public"] is False


@pytest.mark.parametrize("path", MUTATING)
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"coordinates=1"),
        ("multipart/form-data; boundary=x", b"--x--"),
        ("text/plain", b'{"coordinates": []}'),
        ("application/json; charset=latin-1", b"{}"),
    ],
)
def test_form_posts_and_other_media_types_get_415_even_with_a_token(
    app: Any, path: str, content_type: str, body: bytes
) -> None:
    """No cross-site form post can reach a mutating route (a browser cannot add a bearer
    token, and the content type is refused before the route runs)."""
    with operator_client(app) as client:
        response = client.post(path, content=body, headers={"content-type": content_type})
        assert response.status_code == 415, (path, content_type)
        assert response.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
        assert _defects(client) == []


def test_sensor_data_without_a_content_type_is_415(app: Any) -> None:
    with operator_client(app) as client:
        response = client.post("/api/sensor-data", content=json.dumps(BATCH).encode())
        assert response.status_code == 415


def test_control_routes_take_an_empty_body_or_json(app: Any) -> None:
    with operator_client(app) as client:
        assert client.post("/api/agents/resume").status_code == 200
        assert client.post("/api/agents/resume", json={}).status_code == 200


def test_a_body_over_the_limit_is_413_before_it_is_read(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path, max_body_bytes=4096))
    with operator_client(app) as client:
        big = {"coordinates": [{"x": 1.0, "y": 1.0, "severity": 5}] * 400}
        response = client.post("/api/sensor-data", json=big)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"coordinates": ['
            for _ in range(1000):
                yield b'{"x": 1.0, "y": 1.0, "severity": 5},'
            yield b"]}"

        streamed = client.post(
            "/api/sensor-data", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        assert _defects(client) == []
        assert "atomlab_swarm_rejected_requests_total" in client.get("/metrics").text


@pytest.mark.parametrize(
    ("body", "constraint"),
    [
        (
            b'{"coordinates": [{"x": 1.0, "y": 1.0, "severity": 5, "defect_type": "\xff"}]}',
            "not_utf8",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "too_deep"),
        (b'{"coordinates": ' + b"[" * 40 + b"]" * 40 + b"}", "too_deep"),
        (b'{"coordinates": [', "not_json"),
        (b'{"x": 1' + b"0" * 5000 + b"}", "not_json"),
        # an unpaired UTF-16 surrogate is valid JSON but no UTF-8 text: it made the 422's echo
        # of the value fail to encode (500) before
        (
            b'{"coordinates": [{"x": 1.0, "y": 1.0, "severity": 5}], "correlation_id": "\\ud800"}',
            "surrogate",
        ),
        (b'{"coordinates": [{"x": 1.0, "y": 1.0, "severity": 5, "\\udfff": 1}]}', "surrogate"),
        (b'"\\ud800"', "surrogate"),
    ],
)
def test_unreadable_bodies_are_documented_400s(app: Any, body: bytes, constraint: str) -> None:
    with operator_client(app) as client:
        response = client.post(
            "/api/sensor-data", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        error = response.json()["error"]
        assert (error["code"], error["details"]["constraint"]) == ("BAD_REQUEST", constraint)
        assert _defects(client) == []
        documented = client.get("/openapi.json").json()["paths"]["/api/sensor-data"]["post"]
        assert {"400", "401", "403", "413", "415", "422"} <= set(documented["responses"])


@pytest.mark.parametrize("value", ["1e308", "-1e308", "1e18", "123456789012345678901234567890"])
def test_absurd_coordinates_are_422_naming_the_field_not_500(app: Any, value: str) -> None:
    body = '{"coordinates": [{"x": ' + value + ', "y": 1.0, "severity": 5}]}'
    with operator_client(app) as client:
        response = client.post(
            "/api/sensor-data", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422
        assert response.json()["error"]["details"]["field"] == "coordinates.0.x"
        assert _defects(client) == []


def test_a_severity_of_5_0_is_the_integer_5_and_5_5_is_refused(app: Any) -> None:
    with operator_client(app) as client:
        ok = {"coordinates": [{"x": 1.0, "y": 1.0, "severity": 5.0}]}
        assert client.post("/api/sensor-data", json=ok).status_code == 202
        bad = {"coordinates": [{"x": 2.0, "y": 1.0, "severity": 5.5}]}
        assert client.post("/api/sensor-data", json=bad).status_code == 422
        strings = {"coordinates": [{"x": "2.0", "y": 1.0, "severity": 5}]}
        assert client.post("/api/sensor-data", json=strings).status_code == 422


def test_a_huge_value_is_echoed_truncated(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path, max_body_bytes=4 * 1024 * 1024))
    huge = "z" * 3_000_000
    with operator_client(app) as client:
        body = {**BATCH, "correlation_id": huge}
        response = client.post("/api/sensor-data", json=body)
        assert response.status_code == 422
        assert len(response.content) < 2000
        assert response.json()["error"]["details"]["field"] == "correlation_id"
        long_id = client.get("/api/defects/" + "d" * 100)
        assert long_id.status_code == 404 and len(long_id.content) < 2000
        header = client.get("/health", headers={"X-Correlation-ID": "<script>" + "a" * 10_000})
        echoed = header.headers["x-correlation-id"]
        assert len(echoed) <= 64 and "<" not in echoed
        assert header.json()["status"] == "healthy"


def test_405_names_the_allowed_methods(anonymous: TestClient) -> None:
    for method, path, allowed in (
        ("DELETE", "/api/defects", {"GET"}),
        ("PUT", "/api/sensor-data", {"POST"}),
        ("OPTIONS", "/api/commands/distribute", {"POST"}),
        ("GET", "/api/agents/resume", {"POST"}),
    ):
        response = anonymous.request(method, path)
        assert response.status_code == 405, (method, path)
        assert set(response.headers["allow"].replace(" ", "").split(",")) == allowed
        assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


def test_the_openapi_document_states_the_grid_bounds_and_security(tmp_path: Path) -> None:
    settings = _settings(tmp_path, bounds_x_nm=(1.0, 30.0), bounds_y_nm=(0.0, 12.5))
    with TestClient(create_app(settings)) as client:
        schema = client.get("/openapi.json").json()
    coordinate = schema["components"]["schemas"]["SensorCoordinateIn"]["properties"]
    assert (coordinate["x"]["minimum"], coordinate["x"]["maximum"]) == (1.0, 30.0)
    assert (coordinate["y"]["minimum"], coordinate["y"]["maximum"]) == (0.0, 12.5)
    assert coordinate["z"]["multipleOf"] == 0.1
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path in MUTATING:
        operation = schema["paths"][path]["post"]
        assert operation["security"] == [{"bearer": []}]
        assert {"401", "403", "415"} <= set(operation["responses"])
    assert "security" not in schema["paths"]["/api/defects"]["get"]  # reads are public
    link = schema["paths"]["/api/sensor-data"]["post"]["responses"]["202"]["links"]
    assert link["GetDefect"]["operationId"] == "get_defect"


def test_tokens_and_passwords_never_reach_the_log(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream=stream)
    url = f"sqlite:///{tmp_path / 'swarm.sqlite'}"
    try:
        app = create_app(_settings(tmp_path), db_url=url)
        tokens = app.state.swarm.tokens
        with operator_client(app) as client:
            client.post("/api/sensor-data", json=BATCH)
            client.post("/api/sensor-data", json=BATCH, headers=_bearer("wrong-" + "x" * 30))
            client.post("/api/commands/distribute", headers=_bearer(tokens.ingest))
    finally:
        configure_logging("WARNING", "console")
    text = stream.getvalue()
    assert "http.unauthorized" in text and "http.forbidden" in text
    for secret in (tokens.ingest, tokens.control, tokens.link, "wrong-" + "x" * 30):
        assert secret not in text


def test_the_start_log_never_shows_a_database_password(tmp_path: Path) -> None:
    from atomlab.core.settings import redact_url_password

    shown = redact_url_password("postgresql+psycopg://lab:hunter2@db.example:5432/swarm")
    assert shown == "postgresql+psycopg://lab:***@db.example:5432/swarm"
    assert redact_url_password("sqlite:////tmp/x.sqlite") == "sqlite:////tmp/x.sqlite"
    settings = load_settings(
        overrides={"home": tmp_path},
        environ={"ATOMLAB_SWARM__DB_URL": "postgresql+psycopg://lab:hunter2@db/swarm"},
    ).settings
    dumped = settings.model_dump(mode="json")["swarm"]["db_url"]
    assert "hunter2" not in dumped and settings.swarm.db_url is not None
