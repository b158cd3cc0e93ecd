"""GitHub-flavoured Markdown tables: the one writer behind every table the suite prints or files."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def cell(value: object) -> str:
    """A value as a table cell: ``str`` of it, with ``|`` escaped so it cannot split the cell."""
    return str(value).replace("|", "\\|")


def line(cells: Iterable[object]) -> str:
    """One table line, ``| a | b |``; an empty cell is ``| |``."""
    return "|" + "".join(f" {text} |" if (text := cell(v)) else " |" for v in cells)


def table(header: Sequence[object], rows: Iterable[Sequence[object]]) -> list[str]:
    """The lines of a table: ``| a | b |``, the rule ``|---|---|``, then one line per row."""
    header = list(header)
    lines = [line(header), "|" + "---|" * len(header)]
    for row in rows:
        row = list(row)
        if len(row) != len(header):
            raise ValueError(f"a table row has {len(row)} cells, the header {len(header)}: {row}")
        lines.append(line(row))
    return lines
