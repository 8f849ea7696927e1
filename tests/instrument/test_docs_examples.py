"""The examples of docs/instrument.md work as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from atomlab.instrument import protocol

DOC = Path(__file__).resolve().parents[2] / "docs" / "instrument.md"


def _block_after(marker: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(marker)
    match = re.compile(r"```python\n(.*?)```", re.DOTALL).search(text, start)
    assert match is not None
    return match.group(1)


def test_the_server_side_example_answers_any_command() -> None:
    namespace: dict[str, Any] = {}
    exec(_block_after("**Server side**"), namespace)  # noqa: S102 - our own documentation
    answer = namespace["answer"]
    for name, check in (
        ("Bias.Get", lambda r: r.ok and protocol.shortest_float32(r["bias_v"]) == 0.1),
        ("Scan.FrameGet", lambda r: r.error.description == "Scan.FrameGet is not simulated"),
        ("BiasSpectr.Start", lambda r: "not simulated" in r.error.description),
    ):
        request = protocol.encode_request(name)
        wire = answer(request[:40], request[40:])
        assert check(protocol.decode_reply(name, wire[40:])), name
    garbage = protocol.encode_request("Bias.Set", {"bias_v": 1.0})
    wire = answer(garbage[:40], garbage[40:42])  # a body too short for the signature
    assert "too short" in protocol.decode_reply("Bias.Set", wire[40:]).error.description
