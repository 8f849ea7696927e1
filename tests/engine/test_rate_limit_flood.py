"""A user's 429 flood: the CLI against a real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from atomlab.engine import sample_input

Cli = Callable[..., Any]
FLOOD = 12  # the first requests all get 429, then every third one does


def _answer(schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    """A minimal valid value for a JSON schema (enough for the shipped pipelines)."""
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {name: _answer(sub, defs) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [_answer(schema.get("items", {}), defs)] * max(1, schema.get("minItems", 1))
    if kind == "integer":
        return int(schema.get("minimum", 1))
    return "an answer"


class RateLimitingServer(BaseHTTPRequestHandler):
    requests = 0
    limited = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            type(self).requests += 1
            number = self.requests
        if number <= FLOOD or number % 3 == 0:
            with self.lock:
                type(self).limited += 1
            self._reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.05"})
            return
        schema = body["response_format"]["json_schema"]["schema"]
        content = json.dumps(_answer(schema, schema.get("$defs", {})))
        completion = {
            "choices": [{"message": {"content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        }
        self._reply(200, completion, {})

    def _reply(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:  # keep the test output quiet
        pass


@pytest.fixture
def server() -> Iterator[str]:
    RateLimitingServer.requests = RateLimitingServer.limited = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RateLimitingServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_flood_of_429s_is_waited_out_and_every_item_completes(
    cli: Cli, server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATOMLAB_LLM__BASE_URL", server)
    monkeypatch.setenv("ATOMLAB_LLM__MODEL", "local-model")
    monkeypatch.setenv("ATOMLAB_LLM__RETRY_INITIAL_DELAY_S", "0.01")
    monkeypatch.setenv("ATOMLAB_LLM__MAX_ATTEMPTS", "20")  # no request gives up in the flood
    src = tmp_path / "scans.jsonl"
    src.write_bytes(sample_input("defect-triage").read_bytes())
    out = tmp_path / "triage.jsonl"
    result = cli(
        "engine", "run", "defect-triage", "-i", str(src), "-o", str(out),
        "--provider", "openai", "--concurrency", "4", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stdout
    assert result.json["failed"] == []
    assert result.json["items_ok"] == 4 and result.json["rejected"] == 0
    assert RateLimitingServer.limited >= FLOOD
    assert result.json["queue"]["retries"] == RateLimitingServer.limited
    metrics = (tmp_path / "triage.metrics.prom").read_text()
    assert "atomlab_engine_retries_total" in metrics
    assert "atomlab_engine_breaker_state 0.0" in metrics
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["meta"]["model"] for r in records] == ["local-model"] * 4
