"""Bad input to `atomlab instrument` is a clear error with exit 3, never a traceback (issue 15)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from atomlab.core.errors import InvalidInputError
from atomlab.instrument import NanonisClient

Cli = Callable[..., Any]


@pytest.mark.parametrize(
    "args",
    [
        ("get", "bias_v", "--port", "70000"),
        ("get", "bias_v", "--port", "0"),
        ("get", "bias_v", "--host", "h" * 10_000),
        ("get", "bias_v", "--host", "ünïcödé-" * 40 + ".example"),
        ("get", "bias_v", "--timeout-s", "inf"),
        ("get", "bias_v", "--timeout-s", "1e308"),
        ("doctor", "--port", "70000"),
        ("set", "bias_v", "0.2", "--port", "99999", "--allow-writes"),
        ("signals", "--port", "70000"),  # checked even when nothing is read
        ("specs", "--timeout-s", "nan"),
    ],
)
def test_impossible_ports_hosts_and_timeouts_exit_3(cli: Cli, args: tuple[str, ...]) -> None:
    result = cli("instrument", *args, "--json")
    assert result.exit_code == 3, result.stdout
    assert result.json["ok"] is False and len(result.stdout) < 2000


def test_a_binary_file_as_the_catalog_is_a_config_error(cli: Cli, tmp_path: Path) -> None:
    binary = tmp_path / "catalog.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    result = cli("instrument", "specs", "--catalog", str(binary), "--json")
    assert result.exit_code == 3
    assert "not a UTF-8 text file" in result.json["error"]["message"]
    folder = cli("instrument", "specs", "--catalog", str(tmp_path), "--json")
    assert folder.exit_code == 3


def test_the_client_refuses_impossible_addresses_before_connecting() -> None:
    with pytest.raises(InvalidInputError, match=r"outside 1\.\.65535"):
        NanonisClient("127.0.0.1", 70000)
    with pytest.raises(InvalidInputError, match="host"):
        NanonisClient("x" * 300, 6501)
    with pytest.raises(InvalidInputError, match="not a valid host name"):
        NanonisClient("a" * 70 + ".example", 6501).connect()  # a label over 63 characters


@pytest.mark.parametrize(
    "args",
    [
        ("set", "bias_v", "nan", "--allow-writes"),
        ("set", "bias_v", "1e308", "--allow-writes"),
        ("ramp", "bias_v", "0.1", "inf", "0.01", "--plan-only"),
        ("ramp", "bias_v", "0.1", "0.2", "nan", "--plan-only"),
        ("ramp", "bias_v", "0.1", "0.2", "0.01", "--interval-s", "inf", "--plan-only"),
        ("spectrum", "bias", "--start", "nan", "--plan-only"),
        ("spectrum", "bias", "--lockin-amplitude-v", "inf", "--plan-only"),
        ("spectrum", "z", "--distance-m", "1e308", "--plan-only"),
        ("spectrum", "z", "--retract-current-a", "nan", "--plan-only"),
    ],
)
def test_numbers_that_can_never_be_valid_exit_3_before_connecting(
    cli: Cli, args: tuple[str, ...], isolated_home: Path
) -> None:
    """Port 9 (discard): nothing listens, so a command that tried to connect would exit 5; a
    refused one must leave the data home (the audit log) untouched."""
    before = sorted(isolated_home.rglob("*")) if isolated_home.exists() else []
    result = cli("instrument", *args, "--port", "9", "--timeout-s", "1", "--json")
    assert result.exit_code == 3, result.stdout
    assert "not a usable number" in result.json["error"]["message"]
    after = sorted(isolated_home.rglob("*")) if isolated_home.exists() else []
    assert after == before
