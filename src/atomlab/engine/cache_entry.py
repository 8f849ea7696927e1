"""What a valid cache entry is: the one check both a run and ``engine cache validate`` apply.

An entry file ``entries/<k[:2]>/<k>.json`` is self-describing and self-verifying::

    {"format": 2, "key": k, "provider": ..., "model": ..., "stage": ..., "schema": <schema id>,
     "value": {...}, "sha256": <SHA-256 of the canonical JSON of every other field>}

and its answer must conform to the JSON schema stored once per schema in
``schemas/<schema id>.json`` (content-addressed: the file name is the SHA-256 of its canonical
JSON). So an entry is checked from the folder alone, without the manifest (an index for stats and
purges) and without the pipeline: a run and ``validate`` reach the same verdict on the same bytes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import jsonschema_rs
from pydantic import BaseModel

from atomlab.engine.pipeline import canonical_json

ENTRY_FORMAT = 2
ENTRIES_DIR = "entries"
SCHEMAS_DIR = "schemas"
MAX_ENTRY_BYTES = 16 << 20  # far above any answer; a bigger file is damage, not an answer
MAX_SCHEMA_BYTES = 16 << 20
KEY_PATTERN = re.compile(r"[0-9a-f]{64}")
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class Problem(StrEnum):
    """Every way a cache entry (or the folder around it) can be damaged."""

    NOT_A_FILE = "not_a_file"  # a folder, a symbolic link, a FIFO ... where the entry should be
    UNREADABLE = "unreadable"  # permissions, a shard folder that is a file, an I/O error
    TOO_LARGE = "too_large"
    NOT_JSON = "not_json"  # truncated or garbled
    NOT_AN_ENTRY = "not_an_entry"  # JSON, but not the entry layout
    OUTDATED_FORMAT = "outdated_format"  # written by an older atomlab (format 1)
    NEWER_FORMAT = "newer_format"  # written by a newer atomlab: left alone
    CHECKSUM_MISMATCH = "checksum_mismatch"  # edited or bit-flipped
    KEY_MISMATCH = "key_mismatch"  # the file's name is not the key it holds
    SCHEMA_MISSING = "schema_missing"  # its schema file is missing or damaged
    SCHEMA_MISMATCH = "schema_mismatch"  # the answer does not conform to its schema
    WRONG_SCHEMA = "wrong_schema"  # a run asked with another schema than the entry holds


PROBLEM_TEXT: dict[Problem, str] = {
    Problem.NOT_A_FILE: "not a regular file",
    Problem.UNREADABLE: "cannot be read",
    Problem.TOO_LARGE: f"larger than {MAX_ENTRY_BYTES} bytes",
    Problem.NOT_JSON: "not valid JSON (truncated or garbled)",
    Problem.NOT_AN_ENTRY: "not a cache entry",
    Problem.OUTDATED_FORMAT: "written by an older atomlab (entry format 1)",
    Problem.NEWER_FORMAT: "written by a newer atomlab",
    Problem.CHECKSUM_MISMATCH: "its checksum does not match its content (edited or damaged)",
    Problem.KEY_MISMATCH: "its file name is not the key it holds",
    Problem.SCHEMA_MISSING: "its schema file is missing or damaged",
    Problem.SCHEMA_MISMATCH: "its answer does not match its schema",
    Problem.WRONG_SCHEMA: "it holds an answer for another schema",
}


@dataclass(frozen=True)
class EntryMeta:
    """What an entry says about itself (the manifest row is built from it)."""

    provider: str
    model: str
    stage: str
    schema: str
    sha256: str  # of the whole file
    size: int


@dataclass(frozen=True)
class EntryCheck:
    """The verdict on one entry file: ``value`` and ``meta`` when valid, else ``problem``."""

    key: str
    problem: Problem | None = None
    detail: str = ""
    value: dict[str, Any] | None = None
    meta: EntryMeta | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def is_key(text: str) -> bool:
    """True for a cache key (64 lowercase hex digits): never a path of its own."""
    return KEY_PATTERN.fullmatch(text) is not None


def schema_json(schema: type[BaseModel]) -> str:
    return canonical_json(schema.model_json_schema())


def encode_entry(
    key: str, value: dict[str, Any], *, provider: str, model: str, stage: str, schema: str
) -> bytes:
    """The bytes of an entry file holding ``value``."""
    envelope: dict[str, Any] = {
        "format": ENTRY_FORMAT,
        "key": key,
        "provider": provider,
        "model": model,
        "stage": stage,
        "schema": schema,
        "value": value,
    }
    envelope["sha256"] = hashlib.sha256(canonical_json(envelope).encode()).hexdigest()
    return canonical_json(envelope).encode()


def read_regular_file(path: Path, limit: int) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes.

    Never follows a symbolic link and never blocks on a FIFO. Raises ``OSError`` (``ENOENT`` when
    missing), :class:`NotRegularFileError` or :class:`TooLargeError`.
    """
    fd = os.open(path, _OPEN_FLAGS)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFileError(path)
        if info.st_size > limit:
            raise TooLargeError(path)
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # it grew after the fstat
                raise TooLargeError(path)
        return b"".join(chunks)
    finally:
        os.close(fd)


class NotRegularFileError(OSError):
    """A folder, FIFO or device where a file should be."""


class TooLargeError(OSError):
    """A file far larger than anything the cache writes."""


class SchemaStore:
    """The content-addressed JSON schemas of one cache folder, checked and compiled once each."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory / SCHEMAS_DIR
        self._validators: dict[str, jsonschema_rs.Validator | None] = {}
        self._written: set[str] = set()

    def path(self, schema: str) -> Path:
        return self.directory / f"{schema}.json"

    def validator(self, schema: str) -> jsonschema_rs.Validator | None:
        """The compiled schema ``schema`` names, or None when its file is missing or damaged."""
        if schema in self._validators:
            return self._validators[schema]
        found = self._load(schema)
        if found is not None:  # a missing file may be written later by a put
            self._validators[schema] = found
        return found

    def _load(self, schema: str) -> jsonschema_rs.Validator | None:
        if not is_key(schema):
            return None
        try:
            body = read_regular_file(self.path(schema), MAX_SCHEMA_BYTES)
        except OSError:
            return None
        if hashlib.sha256(body).hexdigest() != schema:
            return None
        try:
            document = json.loads(body)
            if not isinstance(document, dict):
                return None
            return jsonschema_rs.Draft202012Validator(document)
        except (ValueError, RecursionError, jsonschema_rs.ValidationError):
            return None

    def ensure(self, model: type[BaseModel], schema: str) -> None:
        """Make sure ``schemas/<schema>.json`` holds ``model``'s schema (writes it when needed)."""
        if schema in self._written:
            return
        if self.validator(schema) is None:
            body = schema_json(model).encode()
            self.directory.mkdir(parents=True, exist_ok=True)
            write_file_atomically(self.path(schema), body)
            self._validators.pop(schema, None)
        self._written.add(schema)

    def forget_all(self) -> None:
        """Drop what was checked so far (``validate`` looks at the files afresh)."""
        self._validators.clear()
        self._written.clear()


def write_file_atomically(path: Path, body: bytes) -> None:
    """Write through a temporary file in the same folder and a rename (never half-written)."""
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(body)
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise


def check_entry(
    path: Path, key: str, schemas: SchemaStore, *, expected_schema: str | None = None
) -> EntryCheck:
    """Read and check the entry file ``path`` that should hold ``key``.

    A missing file raises ``FileNotFoundError`` (a plain miss, not damage); every other fault is
    an :class:`EntryCheck` naming the problem. ``expected_schema`` (a run knows it) must match the
    schema the entry was stored with.
    """
    try:
        body = read_regular_file(path, MAX_ENTRY_BYTES)
    except FileNotFoundError:
        raise
    except NotRegularFileError:
        return EntryCheck(key, Problem.NOT_A_FILE, PROBLEM_TEXT[Problem.NOT_A_FILE])
    except TooLargeError:
        return EntryCheck(key, Problem.TOO_LARGE, PROBLEM_TEXT[Problem.TOO_LARGE])
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
            return EntryCheck(key, Problem.NOT_A_FILE, "a symbolic link, not a file")
        return EntryCheck(key, Problem.UNREADABLE, exc.strerror or str(exc))
    return check_entry_body(body, key, schemas, expected_schema=expected_schema)


def check_entry_body(
    body: bytes, key: str, schemas: SchemaStore, *, expected_schema: str | None = None
) -> EntryCheck:
    """The checks after reading: JSON, layout, format, checksum, key, schema, conformance."""
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError):
        return EntryCheck(key, Problem.NOT_JSON, PROBLEM_TEXT[Problem.NOT_JSON])
    if not isinstance(envelope, dict):
        return EntryCheck(key, Problem.NOT_AN_ENTRY, "not a JSON object")
    version = envelope.get("format")
    if version == 1:
        return EntryCheck(key, Problem.OUTDATED_FORMAT, PROBLEM_TEXT[Problem.OUTDATED_FORMAT])
    if isinstance(version, int) and not isinstance(version, bool) and version > ENTRY_FORMAT:
        return EntryCheck(key, Problem.NEWER_FORMAT, f"entry format {version}")
    digest = envelope.pop("sha256", None)
    fields = ("key", "provider", "model", "stage", "schema")
    if (
        version != ENTRY_FORMAT
        or not isinstance(digest, str)
        or not all(isinstance(envelope.get(name), str) for name in fields)
        or not isinstance(envelope.get("value"), dict)
        or set(envelope) != {"format", "value", *fields}
    ):
        return EntryCheck(key, Problem.NOT_AN_ENTRY, PROBLEM_TEXT[Problem.NOT_AN_ENTRY])
    if hashlib.sha256(canonical_json(envelope).encode()).hexdigest() != digest:
        return EntryCheck(key, Problem.CHECKSUM_MISMATCH, PROBLEM_TEXT[Problem.CHECKSUM_MISMATCH])
    if envelope["key"] != key:
        return EntryCheck(key, Problem.KEY_MISMATCH, f"it holds key {envelope['key'][:16]}…")
    schema: str = envelope["schema"]
    if expected_schema is not None and schema != expected_schema:
        return EntryCheck(key, Problem.WRONG_SCHEMA, PROBLEM_TEXT[Problem.WRONG_SCHEMA])
    validator = schemas.validator(schema)
    if validator is None:
        return EntryCheck(key, Problem.SCHEMA_MISSING, f"schema {schema[:16]}… missing or damaged")
    value: dict[str, Any] = envelope["value"]
    if not validator.is_valid(value):
        first = next(iter(validator.iter_errors(value)), None)
        detail = first.message if first is not None else PROBLEM_TEXT[Problem.SCHEMA_MISMATCH]
        return EntryCheck(key, Problem.SCHEMA_MISMATCH, detail)
    meta = EntryMeta(
        provider=envelope["provider"],
        model=envelope["model"],
        stage=envelope["stage"],
        schema=schema,
        sha256=hashlib.sha256(body).hexdigest(),
        size=len(body),
    )
    return EntryCheck(key, value=value, meta=meta)


__all__ = [
    "ENTRIES_DIR",
    "ENTRY_FORMAT",
    "PROBLEM_TEXT",
    "SCHEMAS_DIR",
    "EntryCheck",
    "EntryMeta",
    "Problem",
    "SchemaStore",
    "check_entry",
    "check_entry_body",
    "encode_entry",
    "is_key",
    "read_regular_file",
    "schema_json",
    "write_file_atomically",
]
