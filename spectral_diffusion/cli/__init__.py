"""Thin entry points (``sd-train``, ``sd-sample``, ``sd-eval``, ``sd-taguchi``); the work lives in
``spectral_diffusion.pipeline``. Here: where the configs are, and how a user error reaches the terminal."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from spectral_diffusion.utils.validation import ConfigError

Task = TypeVar("Task", bound=Callable[..., Any])

# Exit status of a rejected configuration (as argparse uses for bad arguments); Hydra's own errors exit 1.
USER_ERROR_EXIT_CODE = 2


def find_config_dir() -> Path:
    """The Hydra config folder: ``spectral_diffusion/conf`` in an installed wheel or sdist (setup.py maps the
    repository's top-level ``conf/`` there at build time), else ``conf/`` beside the package in a checkout
    (running from the source tree, or an editable install)."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "conf"
    return installed if (installed / "train.yaml").is_file() else package.parent / "conf"


CONFIG_DIR = find_config_dir()


def route_lightning_logs_through_hydra() -> None:
    """Lightning adds its own console handlers; Hydra's root handlers already print and write train.log,
    so drop Lightning's to avoid every message appearing twice."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


def full_error_requested() -> bool:
    """``HYDRA_FULL_ERROR=1``: show the complete traceback, as Hydra does for its own errors."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def report_user_error(program: str, error: Exception) -> int:
    """Print ``program: message`` on stderr, without a traceback; returns ``USER_ERROR_EXIT_CODE``."""
    print(f"{program}: {error}", file=sys.stderr, flush=True)
    return USER_ERROR_EXIT_CODE


def _in_sweep_job() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def reports_config_errors(program: str) -> Callable[[Task], Task]:
    """Decorate a Hydra task function: a ``ConfigError`` is an expected user error, so a single run prints
    its one message (the key and the allowed values) and exits non-zero instead of Hydra's traceback.

    The traceback stays available with ``HYDRA_FULL_ERROR=1``; inside a multirun job the error is raised
    on, so the launcher returns it and the sweeper records the job as failed."""

    def decorate(task: Task) -> Task:
        @functools.wraps(task)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return task(*args, **kwargs)
            except ConfigError as error:
                if full_error_requested() or _in_sweep_job():
                    raise
                raise SystemExit(report_user_error(program, error)) from None

        return run  # type: ignore[return-value]

    return decorate
