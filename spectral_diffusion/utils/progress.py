"""A tqdm progress bar behind the ``progress(done, total)`` callback that long loops (sampling) accept."""

from __future__ import annotations

import sys
from collections.abc import Callable


def progress_bar(label: str, unit: str = "img") -> Callable[[int, int], None]:
    """``update(done, total)``: opens a bar on the first call, advances it, closes it when done == total."""
    from tqdm.auto import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=label, unit=unit, file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update
