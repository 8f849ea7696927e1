"""``atomlab demo``'s command line: its options, and bad input refused before anything starts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import CliResult


def test_an_unknown_preset_is_invalid_input_and_starts_nothing(
    cli: Callable[..., CliResult], isolated_home: Path
) -> None:
    result = cli("--json", "demo", "--preset", "galaxy")
    assert result.exit_code == 3
    error = result.json["error"]
    assert error["details"] == {"field": "preset", "value": "galaxy"}
    assert "standard" in error["message"]
    assert not (isolated_home / "demo").exists()


def test_the_help_names_every_option(cli: Callable[..., CliResult]) -> None:
    result = cli("demo", "--help")
    assert result.exit_code == 0
    for option in ("--preset", "--seed", "--skip", "--keep", "--json"):
        assert option in result.stdout


def test_skipping_the_spine_is_invalid_input(cli: Callable[..., CliResult]) -> None:
    result = cli("--json", "demo", "--skip", "expert")
    assert result.exit_code == 3
    assert result.json["error"]["details"]["field"] == "skip"
