"""Generate ``atomlab/instrument/official_table.py`` from the official ``nanonis-spm`` client.

Run: ``uv run python tools/gen_nanonis_table.py`` (needs the dev group's ``nanonis-spm``).

The official client holds the wire signature of every command of the Nanonis TCP Programming
Interface: its request types (``quickSend(name, body, body_types, response_types)``) and, in each
docstring, the argument and reply names. This script reads that source with :mod:`ast` (it never
imports or runs it), folds the size prefixes into atomlab's composite wire types and writes one
compact line per command. atomlab's own command table (``commands.py``) overrides the generated
entry of every command it describes by hand; the generated rest lets the client pass any
command through to a real controller and lets the simulator answer a command it does not
simulate with the error reply shape the controller uses (value fields present, zeroed).

Where the official client's type list is wrong (it would crash decoding its own reply), the
docstring wins: ``+*c`` in a reply is a string or a string array as the docstring says, ``*+i``
and ``*+d`` are numeric arrays. ``tests/instrument/test_official_table.py`` regenerates the table
from the installed client and fails when the checked-in file differs.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import util
from pathlib import Path

OUTPUT = Path(__file__).resolve().parents[1] / "src/atomlab/instrument/official_table.py"

SCALARS = {"H": "u16", "h": "i16", "I": "u32", "i": "i32", "f": "f32", "d": "f64"}
ARRAYS = {"i": "i32[]", "I": "u32[]", "f": "f32[]", "d": "f64[]", "b": "i8[]"}
BARE = {"i": "i32[*]", "I": "u32[*]", "f": "f32[*]", "d": "f64[*]", "c": "str[*]"}
UNIT_SUFFIX = {
    "V": "v",
    "m": "m",
    "A": "a",
    "s": "s",
    "ms": "ms",
    "Hz": "hz",
    "deg": "deg",
    "K": "k",
    "m/s": "m_s",
    "V/s": "v_s",
    "A/s": "a_s",
    "N": "n",
    "Pa": "pa",
    "%": "pct",
}
_TYPE_WORDS = re.compile(
    r"\((?:unsigned int\d+|int\d*|float\d+|string|\d-?D array[^)]*|boolean|enum[^)]*)",
    re.IGNORECASE,
)


@dataclass
class Line:
    """One ``-- Name (unit) (type) explanation`` line of a docstring."""

    name: str
    unit: str
    kind: str  # the type words: "int", "1d array string", ...


def _doc_lines(section: str) -> list[Line]:
    lines: list[Line] = []
    for raw in section.splitlines():
        text = raw.strip()
        if not text.startswith("-"):
            continue
        text = text.lstrip("-").strip()
        if not text or text.lower().startswith("error described"):
            continue
        match = _TYPE_WORDS.search(text)
        if match is None:
            continue
        head = text[: match.start()].strip()
        kind = match.group(0)[1:].lower()
        unit = ""
        unit_match = re.search(r"\(([^()]*)\)\s*$", head)
        if unit_match:
            unit = unit_match.group(1).strip()
            head = head[: unit_match.start()].strip()
        lines.append(Line(head, unit, kind))
    return lines


def _split_doc(doc: str) -> tuple[list[Line], list[Line]]:
    lower = doc.lower()
    cut = lower.find("return arguments")
    if cut < 0:
        return _doc_lines(doc), []
    return _doc_lines(doc[:cut]), _doc_lines(doc[cut:])


def snake(name: str, unit: str = "") -> str:
    base = re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower() or "value"
    if base[0].isdigit():
        base = "v_" + base
    suffix = UNIT_SUFFIX.get(unit)
    if suffix and not base.endswith("_" + suffix):
        base = f"{base}_{suffix}"
    return base


class _Names:
    """Unique field names within one argument or reply list."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def take(self, name: str) -> str:
        candidate, n = name, 2
        while candidate in self.used:
            candidate = f"{name}_{n}"
            n += 1
        self.used.add(candidate)
        return candidate


def _field(name: str, wire: str, unit: str = "", count: str = "") -> str:
    out = f"{name}:{wire}"
    if unit:
        out += f":{unit}"
    if count:
        out += f"@{count}"
    return out


def _unit_of(line: Line | None) -> str:
    return line.unit if line is not None and line.unit in UNIT_SUFFIX else ""


def args_signature(params: list[str], body_types: list[str], docs: list[Line]) -> str:
    """Fields of a request, one per parameter of the official method."""
    names = _Names()
    fields: list[str] = []
    last_count = ""
    # doc lines for composite arguments include their size lines; match data lines by order
    data_docs = [d for d in docs if not re.search(r"\b(size|number)\b", d.name.lower())]
    for i, (param, code) in enumerate(zip(params, body_types, strict=True)):
        doc = data_docs[i] if len(data_docs) == len(params) else None
        unit = _unit_of(doc)
        name = names.take(snake(param, "") if doc is None else snake(doc.name, unit))
        if code in SCALARS:
            fields.append(_field(name, SCALARS[code], unit))
            if code == "i":
                last_count = name
        elif code == "2f":
            fields.append(_field(name, "f32[][]", unit))
        elif code in ("+*c", "*+c"):
            is_array = (doc is not None and "array" in doc.kind) or code == "*+c"
            fields.append(_field(name, "str[]" if is_array else "str"))
        elif code.startswith("+*"):
            fields.append(_field(name, ARRAYS[code[2]], unit))
        elif code.startswith("*"):
            fields.append(_field(name, BARE[code[1]], unit, last_count or "?"))
        else:
            raise ValueError(f"unknown argument type {code!r}")
    return ",".join(fields)


def reply_signature(response_types: list[str], docs: list[Line]) -> str:
    """Fields of a reply: size and count prefixes fold into the composite that follows them."""
    names = _Names()
    fields: list[str] = []
    codes = list(response_types)
    cursor = 0  # doc line of the current code, when the docstring has one line per code
    aligned = _aligned(codes, docs)
    first = ""

    def doc_at(k: int) -> Line | None:
        return docs[k] if aligned and k < len(docs) else None

    i = 0
    while i < len(codes):
        code = codes[i]
        nxt = codes[i + 1] if i + 1 < len(codes) else ""
        nxt2 = codes[i + 2] if i + 2 < len(codes) else ""
        if code == "i" and nxt == "i" and nxt2 in ("*+c", "2f"):
            doc = doc_at(cursor + 2)
            wire = "f32[][]" if nxt2 == "2f" else "str[]"
            if nxt2 == "*+c" and doc is not None and doc.kind.startswith("2d"):
                wire = "str[][]"
            fields.append(_field(names.take(_name(doc, f"value_{len(fields) + 1}")), wire))
            i, cursor = i + 3, cursor + 3
            continue
        if (code in ("i", "I") and nxt == "*-c") or code == "*-c":
            # a string and its byte count (the official client sometimes forgets the count)
            doc = doc_at(cursor + 1)
            fields.append(_field(names.take(_name(doc, f"value_{len(fields) + 1}")), "str"))
            i, cursor = i + (1 if code == "*-c" else 2), cursor + 2
            continue
        if code == "i" and ((nxt[:1] == "*" and nxt[1:2] in ARRAYS) or nxt in ("*+i", "*+d")):
            doc = doc_at(cursor + 1)
            letter = nxt[-1]
            unit = _unit_of(doc)
            name = names.take(_name(doc, f"value_{len(fields) + 1}", unit))
            fields.append(_field(name, ARRAYS[letter], unit))
            i, cursor = i + 2, cursor + 2
            continue
        if code == "+*c":
            # a string (size, string) or a string array (size, number, strings): the docs say
            after = doc_at(cursor + 2)
            is_array = after is not None and "array string" in after.kind
            if not is_array:
                doc = doc_at(cursor + 1)
                fields.append(_field(names.take(_name(doc, f"value_{len(fields) + 1}")), "str"))
                cursor += 2
            else:
                doc = doc_at(cursor + 2)
                fields.append(_field(names.take(_name(doc, f"value_{len(fields) + 1}")), "str[]"))
                cursor += 3
            i += 1
            continue
        if code == "+*i":
            doc = doc_at(cursor + 1)
            fields.append(_field(names.take(_name(doc, f"value_{len(fields) + 1}")), "i32[]"))
            i, cursor = i + 1, cursor + 2
            continue
        if code.startswith("**"):
            doc = doc_at(cursor)
            unit = _unit_of(doc)
            name = names.take(_name(doc, f"value_{len(fields) + 1}", unit))
            fields.append(_field(name, BARE[code[2]], unit, first))
            i, cursor = i + 1, cursor + 1
            continue
        if code in SCALARS:
            doc = doc_at(cursor)
            unit = _unit_of(doc)
            name = names.take(_name(doc, f"value_{len(fields) + 1}", unit))
            fields.append(_field(name, SCALARS[code], unit))
            if not first:
                first = name
            i, cursor = i + 1, cursor + 1
            continue
        raise ValueError(f"unknown reply type {code!r} in {codes}")
    return ",".join(fields)


def _aligned(codes: list[str], docs: list[Line]) -> bool:
    """True when the docstring has one typed line per wire item (the usual case)."""
    expected = 0
    for code in codes:
        expected += {"+*c": 0, "+*i": 2}.get(code, 1)
    expected += sum(1 for a, b in zip(["", *codes], codes, strict=False) if b == "*-c" and a != "i")
    plus_c = sum(1 for c in codes if c == "+*c")
    return len(docs) in range(expected, expected + 3 * plus_c + 1)


def _name(doc: Line | None, fallback: str, unit: str = "") -> str:
    return fallback if doc is None else snake(doc.name, unit)


def official_source() -> Path:
    spec = util.find_spec("nanonis_spm")
    if spec is None or spec.origin is None:
        raise SystemExit("nanonis-spm is not installed; run `uv sync` (dev group)")
    return Path(spec.origin).with_name("NanonisClass.py")


def generate(source: Path) -> dict[str, tuple[str, str]]:
    tree = ast.parse(source.read_text(encoding="utf-8"))
    table: dict[str, tuple[str, str]] = {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
            calls = [
                n
                for n in ast.walk(fn)
                if isinstance(n, ast.Call)
                and isinstance(n.func, ast.Attribute)
                and n.func.attr == "quickSend"
            ]
            if not calls or fn.name == "quickSend":
                continue
            call = calls[0]
            # the method name is the command (Osci2T_ChGet sends "Osci1T.ChGet": a vendor slip)
            name = fn.name.replace("_", ".", 1)
            body_types = ast.literal_eval(call.args[2])
            response_types = ast.literal_eval(call.args[3])
            params = [a.arg for a in fn.args.args[1:]]
            arg_docs, reply_docs = _split_doc(ast.get_docstring(fn) or "")
            if len(params) != len(body_types) and not response_types:
                # Osci1T.TrigGet: the reply types were written as request types; the
                # docstring ("Arguments: None", four return values) says what the wire holds
                params, body_types, response_types = [], [], body_types
            table[name] = (
                args_signature(params, body_types, arg_docs),
                reply_signature(response_types, reply_docs),
            )
    return dict(sorted(table.items()))


def render(table: dict[str, tuple[str, str]], version: str) -> str:
    """The module text, formatted by ruff so that ``ruff format --check`` leaves it alone."""
    lines = [
        '"""Wire signatures of every command of the official nanonis-spm client (generated).',
        "",
        f"Generated by ``tools/gen_nanonis_table.py`` from nanonis-spm {version}; do not edit.",
        "Each entry is ``name: (arguments, reply)``, each a tuple of fields written",
        "``name:type[:unit][@count]``; ``@count`` names the field holding the length of an array",
        "that has no length prefix of its own.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from typing import Final",
        "",
        f'SOURCE_VERSION: Final = "{version}"',
        "",
        "Signature = tuple[tuple[str, ...], tuple[str, ...]]",
        "",
        "SIGNATURES: Final[dict[str, Signature]] = {",
    ]
    for name, (args, reply) in table.items():
        lines.append(f'    "{name}": ({_tuple(args)}, {_tuple(reply)}),')
    lines.append("}")
    return _ruff_format("\n".join(lines) + "\n")


def _tuple(signature: str) -> str:
    fields = [f'"{f}"' for f in signature.split(",") if f]
    return "(" + ", ".join(fields) + ("," if len(fields) == 1 else "") + ")"


def _ruff_format(text: str) -> str:
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    done = subprocess.run(
        [ruff, "format", "--stdin-filename", str(OUTPUT), "-"],
        input=text,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def installed_version() -> str:
    from importlib.metadata import version

    return version("nanonis-spm")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    args = parser.parse_args(argv)
    text = render(generate(official_source()), installed_version())
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is out of date; run tools/gen_nanonis_table.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT} ({text.count(': (')} commands)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
