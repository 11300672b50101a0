"""Reading numeric tables (CSV with any common delimiter) for ``train``, ``score`` and benches."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from streamae.exceptions import StreamaeError


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]  # the numeric columns, in file order
    values: np.ndarray  # (rows, columns) float32
    other: dict[str, list[str]]  # non-numeric columns (timestamps, labels), as text


def read_table(path: Path, columns: list[str] | None = None,
               exclude: tuple[str, ...] = ()) -> Table:
    """Numeric columns of a CSV (``columns`` picks and orders them; ``exclude`` drops)."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle, _dialect(path, handle)))
    if len(rows) < 2:
        raise StreamaeError(f"{path}: no data rows")
    header, body = rows[0], rows[1:]
    table = {name: [row[i] for row in body] for i, name in enumerate(header)}
    numeric = [name for name in header if name not in exclude and _is_numeric(table[name])]
    chosen = columns or numeric
    missing = [name for name in chosen if name not in numeric]
    if missing:
        raise StreamaeError(f"{path}: not numeric columns or absent: {', '.join(missing)}")
    values = np.array([[float(v) for v in table[name]] for name in chosen],
                      dtype=np.float32).T
    other = {name: table[name] for name in header if name not in chosen}
    return Table(tuple(chosen), values, other)


def read_header(path: Path) -> list[str]:
    """The column names of a CSV (its first row)."""
    with open(path, newline="") as handle:
        return next(csv.reader(handle, _dialect(path, handle)), [])


def _dialect(path: Path, handle: TextIO) -> type[csv.Dialect]:
    """The delimiter and quoting of an open CSV, sniffed from its start; rewinds it."""
    sample = handle.read(8192)
    handle.seek(0)
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error as exc:
        raise StreamaeError(f"{path}: cannot tell the delimiter") from exc


def _is_numeric(cells: list[str]) -> bool:
    try:
        for cell in cells[:100]:
            float(cell)
    except ValueError:
        return False
    return True


def write_table(path: Path, columns: list[str], rows: list[list[object]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
