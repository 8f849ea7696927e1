"""Generation is one-shot: no log message of atomlab.llm may say content is generated again."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import atomlab.llm

LLM_SRC = Path(atomlab.llm.__file__).parent
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}
GENERATION_RETRY = re.compile(r"regenerat|retry(ing)? (the )?generation|re-?ask", re.IGNORECASE)


def _log_messages() -> list[str]:
    messages = []
    for path in sorted(LLM_SRC.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LOG_METHODS
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                messages.append(node.args[0].value)
    return messages


def test_log_messages_never_speak_of_generating_again() -> None:
    messages = _log_messages()
    assert any("transport retry" in m for m in messages)  # the scan finds the real calls
    assert [m for m in messages if GENERATION_RETRY.search(m)] == []
