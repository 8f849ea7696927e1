"""Reads a demo report the way a browser would see it: its sections, figures and scripts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

VOID = {"meta", "br", "hr", "img", "input", "link", "area", "base", "col", "source", "wbr"}


@dataclass
class ParsedReport:
    doctype: str = ""
    headings: list[str] = field(default_factory=list)
    figures: list[dict[str, Any]] = field(default_factory=list)
    external: list[str] = field(default_factory=list)
    """src/href attributes pointing off the page (a self-contained report has none)."""
    unclosed: list[str] = field(default_factory=list)
    tables: int = 0


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.report = ParsedReport()
        self._stack: list[str] = []
        self._in_h2 = False
        self._figure_json: list[str] | None = None

    def handle_decl(self, decl: str) -> None:
        self.report.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for key in ("src", "href"):
            if values.get(key):
                self.report.external.append(str(values[key]))
        if tag == "table":
            self.report.tables += 1
        if tag not in VOID:
            self._stack.append(tag)
        if tag == "h2":
            self._in_h2 = True
            self.report.headings.append("")
        if tag == "script" and "atomlab-figure" in (values.get("class") or ""):
            self._figure_json = []

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self._stack or self._stack[-1] != tag:
            self.report.unclosed.append(f"</{tag}> closes {self._stack[-1:]}")
        else:
            self._stack.pop()
        if tag == "h2":
            self._in_h2 = False
        if tag == "script" and self._figure_json is not None:
            self.report.figures.append(json.loads("".join(self._figure_json)))
            self._figure_json = None

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.report.headings[-1] += data
        if self._figure_json is not None:
            self._figure_json.append(data)


def parse_report(text: str) -> ParsedReport:
    reader = _Reader()
    reader.feed(text)
    reader.close()
    reader.report.unclosed.extend(f"<{tag}> never closed" for tag in reader._stack)
    return reader.report


def section_titles(report: ParsedReport) -> list[str]:
    """The distinct section headings in order (a section may span several numbered parts)."""
    titles: list[str] = []
    for heading in report.headings:
        base = heading.split(" (", 1)[0] if heading.endswith(")") else heading
        if base not in titles:
            titles.append(base)
    return titles
