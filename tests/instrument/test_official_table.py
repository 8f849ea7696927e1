"""The generated signatures of the official client's commands, and our hand-described ones."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from atomlab.instrument.commands import COMMANDS, WireType, lookup
from atomlab.instrument.official_table import SIGNATURES

ROOT = Path(__file__).resolve().parents[2]

# Where our hand-described signature follows the Nanonis documentation, not the official
# client's type list (which is wrong there: see docs/instrument.md).
DOCUMENTED_DEVIATIONS = {
    "BiasSpectr.StatusGet": "the documented reply is a u32 status; the client decodes none",
}


def _generator() -> ModuleType:
    name = "gen_nanonis_table"
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools/gen_nanonis_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_checked_in_table_matches_the_installed_official_client() -> None:
    pytest.importorskip("nanonis_spm")
    assert _generator().main(["--check"]) == 0, "run: uv run python tools/gen_nanonis_table.py"


def test_the_table_covers_every_command_of_the_official_client() -> None:
    assert len(SIGNATURES) >= 660
    assert set(SIGNATURES) <= set(COMMANDS)
    assert len(COMMANDS) == len(set(COMMANDS) | set(SIGNATURES))


def _wire(fields: tuple[str, ...]) -> list[str]:
    return [f.split("@", 1)[0].split(":")[1] for f in fields]


@pytest.mark.parametrize("name", COMMANDS.described())
def test_a_described_command_has_the_official_wire_layout(name: str) -> None:
    if name not in SIGNATURES or name in DOCUMENTED_DEVIATIONS:
        return
    spec = COMMANDS[name]
    args, reply = SIGNATURES[name]
    assert [f.type.value for f in spec.args] == _wire(args), "arguments"
    assert [f.type.value for f in spec.reply] == _wire(reply), "reply"


def test_a_generated_command_is_built_on_first_use_with_its_array_counts() -> None:
    spec = lookup("BiasSpectr.MLSValsGet")
    assert not spec.described
    assert spec.reply[0].type is WireType.I32
    bare = [f for f in spec.reply if f.type.is_bare]
    assert bare and all(f.count == spec.reply[0].name for f in bare)
    assert lookup("BiasSpectr.MLSValsGet") is spec  # cached
