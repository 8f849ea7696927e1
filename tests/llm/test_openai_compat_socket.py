"""The OpenAI-compatible provider against a real HTTP server on 127.0.0.1 (port 0).

The MockTransport tests pin the request bodies; this one proves the real httpx transport,
real headers on the wire, and a real read timeout.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from atomlab.core.clock import FakeClock
from atomlab.core.resilience import RetryPolicy
from atomlab.llm import GenerationRequest, LlmQueue, OpenAICompatProvider, ProviderTimeoutError
from tests.llm.conftest import Ok


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[str] = []  # "429", "ok" or "hang" per request
        self.bodies: list[dict[str, Any]] = []
        self.release = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.server.bodies.append(json.loads(self.rfile.read(length)))
        action = self.server.script.pop(0) if self.server.script else "ok"
        if action == "hang":
            self.server.release.wait(10)
            return
        if action == "429":
            self._send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "2"})
            return
        content = json.dumps({"ok": True})
        body = {
            "choices": [{"message": {"content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3},
        }
        self._send(200, json.dumps(body).encode(), {})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def _provider(server: FakeServer, timeout_s: float = 5.0) -> OpenAICompatProvider:
    host, port = server.server_address[:2]
    return OpenAICompatProvider(
        model="local", base_url=f"http://{host!s}:{port}/v1", timeout_s=timeout_s
    )


async def test_a_429_then_success_over_a_real_socket(server: FakeServer) -> None:
    server.script = ["429", "ok"]
    clock = FakeClock()
    provider = _provider(server)
    queue = LlmQueue(provider, clock=clock, retry=RetryPolicy(max_attempts=3, clock=clock))
    try:
        generation = await queue.submit(GenerationRequest(prompt="hi", schema=Ok))
    finally:
        await queue.aclose()
    assert generation.value == Ok(ok=True)
    assert generation.attempts == 2
    assert clock.sleeps == [2.0]
    assert [b["model"] for b in server.bodies] == ["local", "local"]
    assert server.bodies[0]["response_format"]["json_schema"]["schema"] == Ok.model_json_schema()


async def test_a_server_that_never_answers_is_a_timeout(server: FakeServer) -> None:
    server.script = ["hang"]
    provider = _provider(server, timeout_s=0.2)
    try:
        with pytest.raises(ProviderTimeoutError):
            await provider.generate(GenerationRequest(prompt="hi", schema=Ok))
    finally:
        await provider.aclose()
