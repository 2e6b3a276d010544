"""A ``ConfigError`` is an expected user error: each CLI prints its one message and exits 2, without a
traceback; ``HYDRA_FULL_ERROR=1`` brings the traceback back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from spectral_diffusion.cli import USER_ERROR_EXIT_CODE
from spectral_diffusion.cli.taguchi import main as taguchi_main

from .conftest import cli_env

GAMMA_MESSAGE = "sd-train: noise.gamma=2 is invalid; it must lie in [0.0, 1.0]"


def run_cli(program: str, args: list[str], tmp_path: Path, cache_dir: Path, **env: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", f"spectral_diffusion.cli.{program}", *args, f"hydra.run.dir={tmp_path / 'run'}"]
    return subprocess.run(command, cwd=tmp_path, env={**cli_env(cache_dir), **env}, capture_output=True, text=True,
                          timeout=300)


def test_sd_train_prints_one_message_for_a_bad_value(tmp_path, cache_dir):
    result = run_cli("train", ["debug=default", "noise=equalized", "noise.gamma=2"], tmp_path, cache_dir)
    assert result.returncode == USER_ERROR_EXIT_CODE == 2
    assert result.stderr.strip().splitlines() == [GAMMA_MESSAGE]
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow
def test_hydra_full_error_keeps_the_traceback(tmp_path, cache_dir):
    result = run_cli("train", ["debug=default", "noise=equalized", "noise.gamma=2"], tmp_path, cache_dir,
                     HYDRA_FULL_ERROR="1")
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "ConfigError: noise.gamma=2 is invalid" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("program", ["sample", "eval"])
def test_sd_sample_and_sd_eval_print_one_message(tmp_path, cache_dir, program):
    missing = tmp_path / "missing.ckpt"
    result = run_cli(program, [f"ckpt_path={missing}"], tmp_path, cache_dir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"sd-{program}: ckpt_path={str(missing)!r} does not exist"]


def test_sd_taguchi_prints_one_message_for_a_bad_design(capsys):
    assert taguchi_main(["design", "L4", "a=1,2,3"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("sd-taguchi: ") and len(error.strip().splitlines()) == 1
