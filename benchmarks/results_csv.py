"""The resumable results file of a benchmark: one CSV row per finished cell, appended as each cell ends, so a
stopped benchmark keeps what it measured and a rerun skips the rows already there."""

from __future__ import annotations

import csv
from pathlib import Path


def read_results(path: Path) -> list[dict]:
    """Every row written so far (none when the file does not exist yet)."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def append_result(path: Path, row: dict, columns: list[str]) -> None:
    """Append ``row`` (missing columns left empty), writing the header first for a new file."""
    new = not path.is_file()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        if new:
            writer.writeheader()
        writer.writerow({key: row.get(key, "") for key in columns})
