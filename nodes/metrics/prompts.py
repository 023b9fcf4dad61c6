"""Prompt lists for evaluation runs: plain text, PartiPrompts and DrawBench layouts.

Layouts (auto-detected from the first line):
- text: one prompt per line; blank lines and, by default, lines starting with '#' are skipped.
- parti: PartiPrompts.tsv columns `Prompt`, `Category` (+ `Challenge`, `Note`, kept as extras).
- drawbench: DrawBench CSV columns `Prompts`, `Category`.
Tab- or comma-separated, decided from the header (TSV unquoted, as PartiPrompts.tsv is; CSV with
standard quoting). Errors name the file and the line.
"""

from __future__ import annotations

import csv
import io
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

LAYOUTS = ("auto", "text", "parti", "drawbench")
_PROMPT_COLUMN = {"parti": "prompt", "drawbench": "prompts"}


class PromptFileError(ValueError):
    """A prompt file that cannot be read as asked; the message names the file and line."""


@dataclass(frozen=True)
class PromptEntry:
    text: str
    category: str | None
    line: int  # 1-based line in the file where the entry starts
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class PromptSet:
    """The prompts of one file, in file order."""

    entries: list[PromptEntry]
    layout: str
    source: Path

    @property
    def prompts(self) -> list[str]:
        return [e.text for e in self.entries]

    @property
    def categories(self) -> list[str | None]:
        return [e.category for e in self.entries]

    def by_category(self) -> dict[str | None, list[PromptEntry]]:
        """Entries grouped by category, categories in order of first appearance."""
        groups: OrderedDict[str | None, list[PromptEntry]] = OrderedDict()
        for entry in self.entries:
            groups.setdefault(entry.category, []).append(entry)
        return dict(groups)

    def __len__(self) -> int:
        return len(self.entries)


def _read_text(path: Path, encoding: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PromptFileError(f"prompt file not found: {path}") from None
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PromptFileError(f"{path}, line {line}: not valid {encoding} text ({exc.reason})") from None


def _header_cells(first_line: str) -> tuple[str, list[str]]:
    """The delimiter the header uses and its cells, lower-cased and stripped."""
    delimiter = "\t" if "\t" in first_line else ","
    cells = next(csv.reader([first_line], delimiter=delimiter), [])
    return delimiter, [c.strip().lower() for c in cells]


def detect_layout(first_line: str) -> str:
    """'drawbench' for a `Prompts` column, 'parti' for `Prompt`, else 'text'."""
    _, cells = _header_cells(first_line)
    if "prompts" in cells:
        return "drawbench"
    if "prompt" in cells:
        return "parti"
    return "text"


def load_prompts(
    path: str | os.PathLike[str],
    layout: str = "auto",
    encoding: str = "utf-8-sig",
    skip_comments: bool = True,
) -> PromptSet:
    """Read prompts (and categories) from a TXT, PartiPrompts TSV/CSV or DrawBench CSV file."""
    path = Path(path)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    text = _read_text(path, encoding)
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), None)
    if first is None:
        raise PromptFileError(f"{path}: the file holds no prompts")
    if layout == "auto":
        layout = detect_layout(first)
        if layout == "text" and path.suffix.lower() in (".csv", ".tsv"):
            _, cells = _header_cells(first)
            raise PromptFileError(
                f"{path}, line {lines.index(first) + 1}: header has no 'Prompt' (PartiPrompts) or 'Prompts' "
                f"(DrawBench) column; found {cells}"
            )
    entries = _parse_text(lines, skip_comments) if layout == "text" else _parse_table(path, text, layout)
    if not entries:
        raise PromptFileError(f"{path}: the file holds no prompts")
    return PromptSet(entries=entries, layout=layout, source=path)


def _parse_text(lines: list[str], skip_comments: bool) -> list[PromptEntry]:
    entries = []
    for number, line in enumerate(lines, start=1):
        prompt = line.strip()
        if not prompt or (skip_comments and prompt.startswith("#")):
            continue
        entries.append(PromptEntry(text=prompt, category=None, line=number))
    return entries


def _parse_table(path: Path, text: str, layout: str) -> list[PromptEntry]:
    stream = io.StringIO(text, newline="")
    # skip leading blank lines so the header is the first record
    offset = 0
    while True:
        pos = stream.tell()
        line = stream.readline()
        if not line or line.strip():
            stream.seek(pos)
            break
        offset += 1
    header_line = text.splitlines()[offset]
    delimiter, header = _header_cells(header_line)
    wanted = _PROMPT_COLUMN[layout]
    if wanted not in header:
        raise PromptFileError(
            f"{path}, line {offset + 1}: the {layout} layout needs a '{wanted.capitalize()}' column; found {header}"
        )
    prompt_col = header.index(wanted)
    category_col = header.index("category") if "category" in header else None
    names = header_line.split("\t") if delimiter == "\t" else next(csv.reader([header_line]))
    # PartiPrompts.tsv is unquoted and has prompts with '"' in them; only CSV uses quoting.
    if delimiter == "\t":
        reader = csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(stream, delimiter=delimiter)
    next(reader)  # header
    entries = []
    start = offset + 2
    for row in reader:
        line_no = start
        start = offset + reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= prompt_col:
            raise PromptFileError(
                f"{path}, line {line_no}: {len(row)} field(s), but the prompt is column {prompt_col + 1} "
                f"('{names[prompt_col].strip()}')"
            )
        prompt = row[prompt_col].strip()
        if not prompt:
            raise PromptFileError(f"{path}, line {line_no}: empty '{names[prompt_col].strip()}' cell")
        category = row[category_col].strip() or None if category_col is not None and category_col < len(row) else None
        extra = {
            names[i].strip(): row[i].strip()
            for i in range(min(len(row), len(names)))
            if i not in (prompt_col, category_col) and names[i].strip()
        }
        entries.append(PromptEntry(text=prompt, category=category, line=line_no, extra=extra))
    return entries
