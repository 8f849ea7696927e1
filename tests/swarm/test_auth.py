"""Tokens (contract C5): created 0600 on the service's first start, read by every client of the
same data home, overridden per scope by settings, compared in constant time, never shown."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from atomlab.core.errors import InvalidInputError
from atomlab.core.settings import AtomlabSettings, load_settings
from atomlab.swarm.auth import (
    bearer_headers,
    bearer_token,
    client_token,
    load_tokens,
    tokens_path,
)


def _settings(home: Path, **swarm: Any) -> AtomlabSettings:
    return load_settings(overrides={"home": home, "swarm": swarm}, environ={}).settings


def test_the_first_start_writes_random_tokens_readable_only_by_the_owner(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert not tokens_path(settings).exists()
    tokens = load_tokens(settings, create=True)
    path = tokens_path(settings)
    assert path == tmp_path / "swarm" / "tokens.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text())
    assert set(stored) == {"ingest", "control", "link"}  # reads stay public by default
    assert len({stored["ingest"], stored["control"], stored["link"]}) == 3
    assert all(len(token) >= 32 for token in stored.values())
    assert (tokens.ingest, tokens.control, tokens.link) == (
        stored["ingest"],
        stored["control"],
        stored["link"],
    )
    assert tokens.reads_public
    # A second start keeps them; another process's start does too.
    again = load_tokens(settings, create=True)
    assert again.control == tokens.control


def test_a_client_reads_the_same_file_and_never_creates_one(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert client_token(settings, "ingest") is None
    assert bearer_headers(settings, "ingest") == {}
    assert not tokens_path(settings).exists()  # a client does not invent credentials
    service = load_tokens(settings, create=True)
    assert bearer_headers(settings, "ingest") == {"Authorization": f"Bearer {service.ingest}"}
    assert client_token(settings, "link") == service.link
    # Without a read token a reader may still send an operator token it has: reads accept it.
    assert client_token(settings, "read") == service.ingest


def test_a_token_from_the_settings_wins_over_the_file_for_its_scope(tmp_path: Path) -> None:
    load_tokens(_settings(tmp_path), create=True)
    chosen = "c" * 24
    settings = _settings(tmp_path, control_token=chosen, read_token="r" * 20)
    tokens = load_tokens(settings, create=True)
    assert tokens.control == chosen
    assert tokens.sources["control"] == "settings" and tokens.sources["ingest"] == "file"
    assert not tokens.reads_public
    assert tokens.describe() == {
        "ingest": "file",
        "control": "settings",
        "link": "file",
        "read": "settings",
    }


def test_with_every_token_configured_no_file_is_written(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, ingest_token="i" * 16, control_token="c" * 16, link_token="l" * 16
    )
    tokens = load_tokens(settings, create=True)
    assert tokens.path is None and not tokens_path(settings).exists()
    assert tokens.accepts("ingest", "i" * 16)


def test_scopes_accept_their_token_and_stronger_operator_tokens_only(tmp_path: Path) -> None:
    tokens = load_tokens(_settings(tmp_path), create=True)
    assert tokens.ingest and tokens.control and tokens.link
    assert tokens.accepts("ingest", tokens.ingest)
    assert tokens.accepts("ingest", tokens.control)
    assert not tokens.accepts("control", tokens.ingest)
    assert not tokens.accepts("ingest", tokens.link)  # the link credential is for the link
    assert not tokens.accepts("link", tokens.control)
    for wrong in (None, "", tokens.control[:-1], tokens.control + "x", "\udcff" * 43):
        assert not tokens.accepts("control", wrong)
    assert tokens.granted(tokens.ingest) == "ingest"
    assert tokens.granted("nonsense") is None


def test_tokens_never_appear_in_repr_or_in_config_show(tmp_path: Path, cli: Any) -> None:
    tokens = load_tokens(_settings(tmp_path), create=True)
    assert tokens.control is not None
    assert tokens.control not in repr(tokens)
    os.environ["ATOMLAB_SWARM__CONTROL_TOKEN"] = "s3cret-control-token-42"
    try:
        shown = cli("config", "show", "--json")
    finally:
        del os.environ["ATOMLAB_SWARM__CONTROL_TOKEN"]
    assert shown.exit_code == 0
    assert "s3cret-control-token-42" not in shown.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "JSON object"),
        ('["a"]', "JSON object"),
        ('{"ingest": 5}', "must be a string"),
        ('{"ingest": "short"}', "16 to 1024 characters"),
        ('{"ingest": "has a space in it, sadly"}', "without spaces"),
        ('{"admin": "' + "a" * 20 + '"}', "unknown scopes"),
    ],
)
def test_a_damaged_tokens_file_is_refused_naming_it(
    tmp_path: Path, content: str, message: str
) -> None:
    settings = _settings(tmp_path)
    path = tokens_path(settings)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(InvalidInputError, match=message) as refused:
        load_tokens(settings, create=True)
    assert "short" not in refused.value.message or "16 to 1024" in refused.value.message


def test_a_binary_tokens_file_is_refused(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    path = tokens_path(settings)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xff\xfe\x00garbage")
    path.chmod(0o600)
    with pytest.raises(InvalidInputError, match="not UTF-8"):
        load_tokens(settings)


def test_a_tokens_file_others_can_read_is_refused_by_the_service(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    load_tokens(settings, create=True)
    tokens_path(settings).chmod(0o644)
    with pytest.raises(InvalidInputError, match="chmod 600"):
        load_tokens(settings, create=True)


def test_a_short_token_in_the_settings_is_refused_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as refused:
        load_tokens(_settings(tmp_path, ingest_token="tiny-secret"), create=True)
    assert "tiny-secret" not in str(refused.value) and "swarm.ingest_token" in str(refused.value)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_header_parsing(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token
