"""The summary CSV: one row per finished run, safe under concurrent writers and kills.

Appends happen under a file lock. A row whose columns the file does not have yet makes the file
be rewritten with the union of columns, through a temporary file and an atomic rename, so a reader
or a killed writer never sees a torn file.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

LEADING_COLUMNS = ("run_id", "timestamp", "git_commit", "overrides")


def git_commit(directory: str | Path | None = None) -> str:
    """The commit of the checkout holding this package (``-dirty`` when it has changes), else ``unknown``."""
    directory = Path(directory or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=directory,
                                capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if status else "")


def _format(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return "" if value is None else str(value)


def append_row(path: str | Path, row: Mapping[str, Any], timeout: float = 60.0) -> None:
    """Append ``row`` to the CSV at ``path`` (created with a header if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=timeout):
        rows: list[dict[str, str]] = []
        columns: list[str] = []
        if path.exists() and path.stat().st_size > 0:
            with open(path, newline="") as handle:
                reader = csv.DictReader(handle)
                columns = list(reader.fieldnames or [])
                new_keys = [k for k in row if k not in columns]
                if new_keys:
                    rows = list(reader)
        else:
            new_keys = list(row)
        if not columns or new_keys:
            ordered = [c for c in LEADING_COLUMNS if c in row or c in columns]
            columns = ordered + [c for c in columns if c not in ordered] + [k for k in new_keys if k not in ordered]
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            writer.writerow({k: _format(v) for k, v in row.items()})
            temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            with open(temporary, "w", newline="") as handle:
                handle.write(buffer.getvalue())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
            return
        buffer = io.StringIO()
        csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n").writerow(
            {k: _format(row.get(k)) for k in columns}
        )
        # One write of one complete line: a kill either leaves it whole or not at all.
        with open(path, "a", newline="") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())


def read_rows(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
