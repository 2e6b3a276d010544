"""Shared fixtures: the real Hydra configs composed and shrunk for tests, with private folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from spectral_diffusion.cli import CONFIG_DIR

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One classifier cache for the whole session, never the user's ~/.cache."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["SPECTRAL_DIFFUSION_CACHE"] = str(path)
    return path


def compose_train(overrides: list[str], tmp_path: Path, cache_dir: Path) -> DictConfig:
    """``conf/train.yaml`` with ``overrides``, its folders redirected into ``tmp_path``."""
    return compose_root("train", overrides, tmp_path, cache_dir)


def compose_root(name: str, overrides: list[str], tmp_path: Path, cache_dir: Path) -> DictConfig:
    """The root config ``conf/<name>.yaml`` (train, distill, ...) with ``overrides``, folders in ``tmp_path``."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name=name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.summary_csv = str(tmp_path / "summary.csv")
        cfg.paths.cache_dir = str(cache_dir)
        cfg.trainer.enable_progress_bar = False
    return cfg


@pytest.fixture
def cfg_debug(tmp_path, cache_dir) -> DictConfig:
    return compose_train(["debug=default"], tmp_path, cache_dir)


def cli_env(cache_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["SPECTRAL_DIFFUSION_CACHE"] = str(cache_dir)
    # The CLIs run the checkout's code too, even beside a regular (non-editable) install (pyproject: pythonpath).
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env
