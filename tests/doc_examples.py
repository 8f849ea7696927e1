"""A documentation page's Python examples, run as written: offline, no API key, a fresh folder.

Each example runs in its own interpreter with ``ATOMLAB_HOME`` in the test's folder and every
provider key and ``ATOMLAB_*`` setting of the caller's environment removed, so an example that
needs a key, a network or a configured home fails here as it would for a new user.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
KEYS = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY")
EXAMPLE_TIMEOUT_S = 120  # a safety net against a hang, never a timing assertion


def python_examples(page: str) -> list[str]:
    """The ```python blocks of ``docs/<page>``, in order."""
    return BLOCK.findall((DOCS / page).read_text(encoding="utf-8"))


def run_example(page: str, number: int, folder: Path) -> None:
    """Run example ``number`` (0-based) of ``docs/<page>`` in ``folder``; fail with its stderr."""
    code = python_examples(page)[number]
    env = {k: v for k, v in os.environ.items() if k not in KEYS and not k.startswith("ATOMLAB_")}
    env["ATOMLAB_HOME"] = str(folder / "home")
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"example {number + 1} of {page} failed:\n{result.stderr}"
