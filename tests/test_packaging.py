"""A regular install works: the wheel ships conf/ inside the package and the Taguchi sweeper in the
``hydra_plugins`` namespace, and ``CONFIG_DIR`` finds the configs both installed and in a checkout.

Installing the wheel into a fresh environment and running ``sd-train`` from it is done by ``.ci/run``."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from spectral_diffusion import cli

from .conftest import REPO_ROOT

# What a build must not pick up from a working checkout.
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "outputs",
                                     "multirun", "lightning_logs", ".pytest_cache", "docs", "benchmarks")


def _load_cli_package_from(package_dir: Path):
    """``spectral_diffusion/cli/__init__.py`` executed from another folder, as if installed there."""
    spec = importlib.util.spec_from_file_location("installed_cli", package_dir / "cli" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_dir_in_a_checkout_is_the_top_level_conf():
    assert cli.CONFIG_DIR == REPO_ROOT / "conf"
    assert (cli.CONFIG_DIR / "train.yaml").is_file()


def test_config_dir_of_an_installed_package_is_the_packaged_conf(tmp_path):
    package = tmp_path / "site-packages" / "spectral_diffusion"
    (package / "cli").mkdir(parents=True)
    shutil.copy(Path(cli.__file__), package / "cli" / "__init__.py")
    assert _load_cli_package_from(package).CONFIG_DIR == tmp_path / "site-packages" / "conf"  # nothing shipped
    (package / "conf").mkdir()
    (package / "conf" / "train.yaml").write_text("seed: 0\n")
    assert _load_cli_package_from(package).CONFIG_DIR == package / "conf"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """A wheel built (as pip builds it) from a clean copy of the sources."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    shutil.copytree(REPO_ROOT, source, ignore=NOT_SOURCES)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(root / "dist"),
                    str(source)], check=True, capture_output=True, text=True, timeout=600)
    (path,) = (root / "dist").glob("spectral_diffusion-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


@pytest.fixture
def wheel_files(wheel) -> set[str]:
    return set(wheel.namelist())


@pytest.mark.slow
def test_wheel_ships_every_config_inside_the_package(wheel_files):
    configs = sorted(p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "conf").rglob("*.yaml"))
    assert "conf/train.yaml" in configs and "conf/noise/schedule/cosine.yaml" in configs
    missing = [c for c in configs if f"spectral_diffusion/{c}" not in wheel_files]
    assert missing == []
    groups = {p.name for p in (REPO_ROOT / "conf").iterdir() if p.is_dir()}
    shipped = {name.split("/")[2] for name in wheel_files if name.startswith("spectral_diffusion/conf/")}
    assert groups <= shipped
    assert not any(name.startswith("conf/") for name in wheel_files)  # no top-level "conf" package


@pytest.mark.slow
def test_wheel_ships_the_sweeper_plugin_in_the_hydra_plugins_namespace(wheel_files):
    plugin = {p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "hydra_plugins").rglob("*.py")}
    assert "hydra_plugins/taguchi_sweeper/taguchi_sweeper.py" in plugin and plugin <= wheel_files
    # No hydra_plugins/__init__.py: it would hide the other plugins (joblib, submitit) from Hydra's scan.
    assert "hydra_plugins/__init__.py" not in wheel_files
    assert not any("__pycache__" in name or name.startswith("tests/") for name in wheel_files)



@pytest.mark.slow
def test_wheel_declares_the_four_commands_and_the_submitit_launcher(wheel, wheel_files):
    dist_info = next(name.split("/")[0] for name in wheel_files if ".dist-info/" in name)
    entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
    for command in ("train", "sample", "eval", "taguchi"):
        assert f"sd-{command} = spectral_diffusion.cli.{command}:main" in entry_points
    metadata = wheel.read(f"{dist_info}/METADATA").decode()
    assert "Requires-Dist: hydra-submitit-launcher" in metadata
