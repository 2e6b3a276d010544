"""Checkpoints load with ``torch.load(weights_only=True)``: a pickle payload is refused before it runs, and
what sd-train writes (optimizer, scheduler, callback and loop states included) still loads and resumes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf

from spectral_diffusion.callbacks import AtomicCheckpointIO, load_checkpoint, plain_data
from spectral_diffusion.pipeline import build, load_module
from spectral_diffusion.utils.validation import ConfigError

from .conftest import cli_env, compose_train


class Payload:
    """Unpickling this object runs ``os.system``: here it only creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def malicious(tmp_path) -> tuple[Path, Path]:
    """A file shaped like an sd-train checkpoint whose stored config carries the payload."""
    marker, path = tmp_path / "payload-ran", tmp_path / "malicious.ckpt"
    torch.save({"state_dict": {}, "global_step": 0, "spectral_diffusion_config": Payload(marker)}, path)
    return path, marker


def test_the_payload_runs_when_loaded_without_weights_only(malicious):
    # Shows that the file is dangerous, so the refusals below are what protects the user.
    path, marker = malicious
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_load_module_refuses_a_pickle_payload_and_nothing_runs(malicious):
    path, marker = malicious
    with pytest.raises(ConfigError) as refused:
        load_module(path)
    assert str(path) in str(refused.value) and "posix.system" in str(refused.value)
    assert "nothing in it was run" in str(refused.value)
    assert not marker.exists()


def test_resume_refuses_a_pickle_payload_whatever_lightning_asks(malicious):
    path, marker = malicious
    for weights_only in (None, False):
        with pytest.raises(ConfigError, match="malicious.ckpt"):
            AtomicCheckpointIO().load_checkpoint(path, weights_only=weights_only)
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("program", ["train", "sample"])
def test_cli_refuses_a_pickle_payload_with_one_message(malicious, tmp_path, cache_dir, program):
    path, marker = malicious
    extra = ["debug=default"] if program == "train" else []
    command = [sys.executable, "-m", f"spectral_diffusion.cli.{program}", f"ckpt_path={path}", *extra,
               f"hydra.run.dir={tmp_path / 'run'}", f"paths.summary_csv={tmp_path / 'summary.csv'}"]
    result = subprocess.run(command, cwd=tmp_path, env=cli_env(cache_dir), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    assert f"sd-{program}: ckpt_path={str(path)!r} was refused" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_plain_data_replaces_omegaconf_nodes_and_keeps_other_containers():
    state = torch.nn.Linear(2, 2).state_dict()
    checkpoint = {"state_dict": state, "groups": [{"betas": OmegaConf.create([0.9, 0.99]), "lr": 1e-3}]}
    plain = plain_data(checkpoint)
    assert plain["groups"] == [{"betas": [0.9, 0.99], "lr": 1e-3}]
    assert type(plain["groups"][0]["betas"]) is list
    assert plain["state_dict"] is state  # untouched: same object, metadata kept
    assert isinstance(checkpoint["groups"][0]["betas"], type(OmegaConf.create([])))  # the input is not mutated


def _fit(module, datamodule, ckpt_dir: Path, max_steps: int, ckpt_path: Path | None = None) -> Trainer:
    trainer = Trainer(max_steps=max_steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0,
                                                 every_n_train_steps=2)],
                      plugins=[AtomicCheckpointIO()], limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adam", "adaptive"])
def test_sd_train_checkpoints_load_and_resume_with_weights_only(tmp_path, cache_dir, optimizer):
    # adaptive is Prodigy, whose param groups hold the config's betas (an OmegaConf list before plain_data).
    cfg = compose_train(["debug=default", f"optimizer={optimizer}"], tmp_path, cache_dir)
    components = build(cfg)
    _fit(components.module, components.datamodule, tmp_path / "first", max_steps=4)
    saved = torch.load(tmp_path / "first" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 4 and saved["optimizer_states"] and saved["lr_schedulers"] and saved["callbacks"]
    assert load_checkpoint(tmp_path / "first" / "last.ckpt")["spectral_diffusion_config"] == OmegaConf.to_container(
        cfg, resolve=True)

    # Resume through Lightning (strict weights_only) into a fresh module: all states come back.
    resumed = build(cfg)
    trainer = _fit(resumed.module, resumed.datamodule, tmp_path / "second", max_steps=6,
                   ckpt_path=tmp_path / "first" / "last.ckpt")
    assert trainer.global_step == 6
    assert torch.load(tmp_path / "second" / "last.ckpt", weights_only=True)["global_step"] == 6

    module = load_module(tmp_path / "second" / "last.ckpt")
    samples = module.generate(3, seed=0, batch_size=3)
    assert samples.shape == (3, *module.image_shape) and torch.isfinite(samples).all()
