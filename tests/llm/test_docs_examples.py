"""Every Python example in docs/llm.md runs as written: offline, no key, a fresh folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.doc_examples import python_examples, run_example

PAGE = "llm.md"


def test_the_page_has_examples() -> None:
    assert python_examples(PAGE)


@pytest.mark.parametrize("number", range(len(python_examples(PAGE))))
def test_example_runs_as_written(number: int, tmp_path: Path) -> None:
    run_example(PAGE, number, tmp_path)
