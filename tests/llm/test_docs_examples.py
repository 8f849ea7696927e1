"""Every Python example in docs/llm.md runs as written: offline, no key, a fresh folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "llm.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
KEYS = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY")


def _examples() -> list[str]:
    return BLOCK.findall(DOC.read_text(encoding="utf-8"))


def test_the_page_has_examples() -> None:
    assert _examples()


@pytest.mark.parametrize("number", range(len(_examples())))
def test_example_runs_as_written(number: int, tmp_path: Path) -> None:
    code = _examples()[number]
    env = {k: v for k, v in os.environ.items() if k not in KEYS and not k.startswith("ATOMLAB_")}
    env["ATOMLAB_HOME"] = str(tmp_path / "home")
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"example {number + 1} of {DOC.name} failed:\n{result.stderr}"
