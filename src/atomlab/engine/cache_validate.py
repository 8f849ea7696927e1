"""``engine cache validate [--fix]``: find every kind of damage in a cache folder and repair it.

Entries are judged by :func:`atomlab.engine.cache_entry.check_entry`, the check a run makes on
every read, so ``validate`` calls an entry valid exactly when a run would use it. Around the
entries it checks the folder layout (``entries/``, its two-character shard folders, ``schemas/``),
the manifest (a SQLite index: missing, damaged, out of date) and every index row against its
entry. ``fix`` removes what is damaged, moves a valid entry found in the wrong shard, and rebuilds
the index from the valid entries; entries written by a newer atomlab are reported and left alone.
"""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atomlab.core.errors import NotFoundError
from atomlab.engine.cache import (
    INDEX_COLUMNS,
    MANIFEST_NAME,
    IndexRow,
    ManifestDamagedError,
    check_cache_location,
    manifest_files,
    open_manifest,
    remove_path,
)
from atomlab.engine.cache_entry import (
    ENTRIES_DIR,
    SCHEMAS_DIR,
    EntryCheck,
    EntryMeta,
    Problem,
    check_entry,
    is_key,
)

if TYPE_CHECKING:
    from atomlab.engine.cache import ResponseCache

# Kinds that do not stop the cache from working: reported, tidied by --fix, exit 0.
NOTE_KINDS = frozenset(
    {"unindexed", "stale_row", "temp_leftover", "manifest_outdated", Problem.NEWER_FORMAT.value}
)
# Everything else is damage: ``validate`` exits 3 until ``--fix`` repairs it.
STRUCTURE_KINDS = (
    "manifest_missing",
    "manifest_damaged",
    "entries_not_a_folder",
    "schemas_not_a_folder",
    "shard_not_a_folder",
    "schema_damaged",
    "stray",
    "misplaced",
    "bad_row",
    "dangling_row",
)
INDEX_KINDS = frozenset(
    {
        "manifest_missing",
        "manifest_damaged",
        "manifest_outdated",
        "bad_row",
        "dangling_row",
        "stale_row",
        "unindexed",
    }
)
MAX_LISTED = 200  # findings listed one by one in the report (all are counted in ``kinds``)


@dataclass
class Finding:
    """One thing ``validate`` found: its kind, where, and whether ``--fix`` repaired it."""

    kind: str
    path: str
    detail: str
    key: str | None = None
    fixed: bool = False

    @property
    def is_damage(self) -> bool:
        return self.kind not in NOTE_KINDS

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "path": self.path, "detail": self.detail}
        if self.key is not None:
            data["key"] = self.key
        data["fixed"] = self.fixed
        return data


@dataclass
class CacheReport:
    """What :meth:`ResponseCache.validate` found (and, with ``fix``, repaired)."""

    directory: str = ""
    entries: int = 0
    ok: int = 0
    manifest: str = "ok"  # ok, absent (an empty cache), missing, damaged, outdated, rebuilt
    findings: list[Finding] = field(default_factory=list)
    purged: int = 0
    indexed: int = 0
    valid_keys: set[str] = field(default_factory=set)  # what a run would read as a hit

    @property
    def corrupt(self) -> list[str]:
        """Keys of the entries a run would not use (damaged entry files)."""
        problems = {p.value for p in Problem} - {Problem.NEWER_FORMAT.value}
        return [f.key for f in self.findings if f.key is not None and f.kind in problems]

    @property
    def damage(self) -> list[Finding]:
        return [f for f in self.findings if f.is_damage]

    @property
    def unfixed(self) -> list[Finding]:
        return [f for f in self.damage if not f.fixed]

    @property
    def kinds(self) -> dict[str, int]:
        return dict(sorted(Counter(f.kind for f in self.findings).items()))

    def count(self, kind: str) -> int:
        return sum(1 for f in self.findings if f.kind == kind)

    def to_dict(self) -> dict[str, Any]:
        damage = self.damage
        return {
            "entries": self.entries,
            "ok": self.ok,
            "corrupt": len(self.corrupt),
            "corrupt_keys": self.corrupt[:MAX_LISTED],
            "damage": len(damage),
            "unfixed": len(self.unfixed),
            "kinds": self.kinds,
            "findings": [f.to_dict() for f in self.findings[:MAX_LISTED]],
            "findings_listed": min(len(self.findings), MAX_LISTED),
            "manifest": self.manifest,
            "unindexed": self.count("unindexed"),
            "purged": self.purged,
            "indexed": self.indexed,
        }


@dataclass
class _Walk:
    cache: ResponseCache
    fix: bool
    report: CacheReport
    valid: dict[str, EntryMeta] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)  # keys with an entry file, valid or not

    @property
    def root(self) -> Path:
        return self.cache.directory

    def find(self, kind: str, path: Path, detail: str, key: str | None = None) -> Finding:
        finding = Finding(kind, str(path), detail, key)
        self.report.findings.append(finding)
        return finding

    def remove(self, finding: Finding, path: Path) -> None:
        """With ``fix``, remove ``path`` (file, link or folder) and mark ``finding`` fixed."""
        if not self.fix:
            return
        try:
            if os.path.lexists(path):
                remove_path(path)
                self.report.purged += 1
            finding.fixed = True
        except OSError as exc:
            finding.detail += f"; --fix could not remove it ({exc.strerror or exc}): check its "
            finding.detail += "permissions, or delete it by hand"


def validate_cache(cache: ResponseCache, *, fix: bool) -> CacheReport:
    """Check (and with ``fix`` repair) ``cache.directory``; see the module docstring."""
    root = cache.directory
    check_cache_location(root, create=False)
    if not root.exists():
        raise NotFoundError(
            f"no cache at {str(root)!r}; check --cache-dir or engine.cache_dir", path=str(root)
        )
    walk = _Walk(cache, fix, CacheReport(directory=str(root)))
    cache.schemas.forget_all()
    rows = _read_index(walk)
    _check_schemas(walk)
    _check_entries(walk)
    if rows is not None:
        _check_rows(walk, rows)
    elif walk.report.manifest == "absent" and walk.seen:
        walk.find(
            "manifest_missing",
            root / MANIFEST_NAME,
            f"{len(walk.seen)} entry files but no {MANIFEST_NAME} (deleted?); --fix rebuilds it",
        )
        walk.report.manifest = "missing"
    if fix:
        _rebuild_index(walk, rows)
    walk.report.valid_keys = set(walk.valid)
    return walk.report


def _read_index(walk: _Walk) -> dict[str, IndexRow] | None:
    """The manifest's rows by key, or None when it is absent or unusable (a finding says why)."""
    path = walk.root / MANIFEST_NAME
    try:
        conn = open_manifest(walk.root, writable=False)
    except ManifestDamagedError as exc:
        walk.find("manifest_damaged", path, str(exc.details.get("reason", exc.message)))
        walk.report.manifest = "damaged"
        return None
    if conn is None:
        walk.report.manifest = "absent"
        return None
    try:
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(str(check))
        columns = {row[1] for row in conn.execute("PRAGMA table_info(entries)").fetchall()}
        # SELECT * : an older index lacks the newer columns (_cell fills them in)
        rows = {
            str(row["key"]): IndexRow(**{name: _cell(row, name) for name in INDEX_COLUMNS})
            for row in conn.execute("SELECT * FROM entries").fetchall()
        }
        if "schema" not in columns:
            walk.find("manifest_outdated", path, "index of an older atomlab; --fix upgrades it")
            walk.report.manifest = "outdated"
        return rows
    except sqlite3.Error as exc:
        walk.find("manifest_damaged", path, str(exc))
        walk.report.manifest = "damaged"
        return None
    finally:
        conn.close()


def _cell(row: sqlite3.Row, name: str) -> Any:
    try:
        value = row[name]
    except IndexError:
        value = None
    if name == "size":
        return value if isinstance(value, int) else -1
    return value if isinstance(value, str) else ""


def _check_schemas(walk: _Walk) -> None:
    folder = walk.root / SCHEMAS_DIR
    if not os.path.lexists(folder):
        return
    if folder.is_symlink() or not folder.is_dir():
        finding = walk.find("schemas_not_a_folder", folder, "a file where the schemas folder is")
        walk.remove(finding, folder)
        return
    for child in sorted(folder.iterdir()):
        name = child.name
        if name.startswith(".tmp-"):
            walk.remove(walk.find("temp_leftover", child, "left by a killed write"), child)
        elif name.endswith(".json") and is_key(name[:-5]):
            if walk.cache.schemas.validator(name[:-5]) is None:
                finding = walk.find(
                    "schema_damaged", child, "not the schema its name promises (edited or damaged)"
                )
                walk.remove(finding, child)
        else:
            walk.remove(walk.find("stray", child, "not a schema file"), child)


def _check_entries(walk: _Walk) -> None:
    folder = walk.root / ENTRIES_DIR
    if not os.path.lexists(folder):
        return
    if folder.is_symlink() or not folder.is_dir():
        finding = walk.find("entries_not_a_folder", folder, "a file where the entries folder is")
        walk.remove(finding, folder)
        return
    for shard in sorted(folder.iterdir()):
        if not _is_shard_name(shard.name):
            walk.remove(walk.find("stray", shard, "not an entry shard"), shard)
        elif shard.is_symlink() or not shard.is_dir():
            finding = walk.find("shard_not_a_folder", shard, "a file where a shard folder is")
            walk.remove(finding, shard)
        else:
            for child in sorted(shard.iterdir()):
                _check_child(walk, shard.name, child)


def _is_shard_name(name: str) -> bool:
    return len(name) == 2 and all(c in "0123456789abcdef" for c in name)


def _check_child(walk: _Walk, shard: str, child: Path) -> None:
    name = child.name
    if name.startswith(".tmp-"):
        walk.remove(walk.find("temp_leftover", child, "left by a killed write"), child)
        return
    key = name[:-5] if name.endswith(".json") else ""
    if not is_key(key):
        walk.remove(walk.find("stray", child, "not an entry file"), child)
        return
    try:
        check = check_entry(child, key, walk.cache.schemas)
    except FileNotFoundError:  # removed meanwhile (a run discarding it)
        return
    if key[:2] != shard:
        _misplaced(walk, child, key, check)
        return
    walk.report.entries += 1
    walk.seen.add(key)
    if check.ok:
        assert check.meta is not None
        walk.valid[key] = check.meta
        walk.report.ok += 1
        return
    _damaged_entry(walk, child, check)


def _damaged_entry(walk: _Walk, path: Path, check: EntryCheck) -> None:
    assert check.problem is not None
    finding = walk.find(check.problem.value, path, check.detail, check.key)
    if check.problem is not Problem.NEWER_FORMAT:
        walk.remove(finding, path)


def _misplaced(walk: _Walk, path: Path, key: str, check: EntryCheck) -> None:
    """An entry file in another key's shard: moved where it belongs when valid, else removed."""
    target = walk.cache.entry_path(key)
    finding = walk.find("misplaced", path, f"belongs in {ENTRIES_DIR}/{key[:2]}/", key)
    if not check.ok or os.path.lexists(target):
        if not check.ok:
            finding.detail += f" and is damaged ({check.detail})"
        walk.remove(finding, path)
        return
    if walk.fix:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            path.replace(target)
            finding.fixed = True
        except OSError as exc:
            finding.detail += f"; --fix could not move it ({exc.strerror or exc})"
            return
        walk.report.entries += 1
        walk.seen.add(key)
        assert check.meta is not None
        walk.valid[key] = check.meta
        walk.report.ok += 1


def _check_rows(walk: _Walk, rows: dict[str, IndexRow]) -> None:
    manifest = walk.root / MANIFEST_NAME
    for key, row in sorted(rows.items()):
        if not is_key(key):
            walk.find("bad_row", manifest, f"index row with a key that is not a cache key: {key!r}")
            continue
        meta = walk.valid.get(key)
        if meta is None:
            if key not in walk.seen:
                walk.find("dangling_row", manifest, "indexed, but its entry file is gone", key)
            continue
        if _row_of(meta) != row:
            walk.find("stale_row", manifest, "its index row does not describe the file", key)
    for key in sorted(set(walk.valid) - set(rows)):
        walk.find("unindexed", manifest, "a valid entry the index lacks (a killed run)", key)


def _row_of(meta: EntryMeta) -> IndexRow:
    return IndexRow(meta.sha256, meta.size, meta.provider, meta.model, meta.stage, meta.schema)


def _rebuild_index(walk: _Walk, rows: dict[str, IndexRow] | None) -> None:
    """Make the index describe exactly the valid entries (replacing a damaged manifest)."""
    index_findings = [f for f in walk.report.findings if f.kind in INDEX_KINDS]
    wanted = {key: _row_of(meta) for key, meta in walk.valid.items()}
    if rows is not None and rows == wanted and not index_findings:
        return
    if rows is None and not wanted and walk.report.manifest == "absent":
        return  # an empty cache without a manifest is a new cache, nothing to rebuild
    try:
        if walk.report.manifest == "damaged":
            for path in manifest_files(walk.root):
                if os.path.lexists(path):
                    remove_path(path)
        conn = open_manifest(walk.root, writable=True)
        assert conn is not None
        try:
            with conn:
                conn.execute("DELETE FROM entries")
                conn.executemany(
                    "INSERT INTO entries (key, sha256, size, provider, model, stage, schema) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (key, row.sha256, row.size, row.provider, row.model, row.stage, row.schema)
                        for key, row in sorted(wanted.items())
                    ],
                )
        finally:
            conn.close()
    except (OSError, sqlite3.Error, ManifestDamagedError) as exc:
        reason = getattr(exc, "message", None) or getattr(exc, "strerror", None) or str(exc)
        for finding in index_findings:
            finding.detail += f"; --fix could not rebuild the index ({reason})"
        return
    for finding in index_findings:
        finding.fixed = True
    walk.report.indexed = len(wanted)
    if walk.report.manifest in ("missing", "damaged", "outdated"):
        walk.report.manifest = "rebuilt"


__all__ = ["NOTE_KINDS", "STRUCTURE_KINDS", "CacheReport", "Finding", "validate_cache"]
