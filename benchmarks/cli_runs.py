"""The project's CLIs (``sd-train``, ``sd-distill``) run from a benchmark as subprocesses: each run into its own
Hydra folder, skipped when it finished before (its metrics.json exists) and resumed from its last.ckpt when it was
interrupted, with the CPU minutes it used."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

LOG_TAIL = 5  # lines of a failed run's log quoted in its error


def child_cpu_minutes() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) / 60.0


def run_command(command: list[str], log_path: Path) -> float:
    """Run a CLI, its output into ``log_path``; returns the CPU minutes it used (user + system, whole run). A failed
    run raises a RuntimeError that quotes the end of its log (where the CLI names what it refused)."""
    before = child_cpu_minutes()
    with log_path.open("a") as log:
        returncode = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    if returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-LOG_TAIL:])
        raise RuntimeError(f"{' '.join(command[1:4])} ... exited with {returncode}; the end of {log_path}:\n{tail}")
    return child_cpu_minutes() - before


def resumable_run(cli: str, folder: Path, overrides: list[str], log_path: Path) -> float | None:
    """``python -m spectral_diffusion.cli.<cli> hydra.run.dir=<folder> *overrides`` unless ``folder`` holds a finished
    run (metrics.json: returns None); an interrupted run (checkpoints/last.ckpt, no metrics.json) resumes from its
    last.ckpt into the same folder. Returns the CPU minutes this call used."""
    if (folder / "metrics.json").is_file():
        return None
    command = [sys.executable, "-m", f"spectral_diffusion.cli.{cli}", f"hydra.run.dir={folder}", *overrides]
    last = folder / "checkpoints" / "last.ckpt"
    if last.is_file():
        command.append(f"ckpt_path={last}")
    return run_command(command, log_path)
