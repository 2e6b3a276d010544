"""End to end: sd-train's artifacts, resume after SIGKILL, the NaN guard, the summary CSV, DDP, sd-sample."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning import Trainer

from spectral_diffusion.callbacks import AtomicCheckpointIO
from spectral_diffusion.losses import MSELoss
from spectral_diffusion.module import NonFiniteLossError
from spectral_diffusion.pipeline import build, load_module, train
from spectral_diffusion.utils.summary import append_row, read_rows

from .conftest import REPO_ROOT, cli_env


def sd_train(args: list[str], run_dir: Path, tmp_path: Path, cache_dir: Path, **kwargs) -> subprocess.Popen:
    command = [sys.executable, "-m", "spectral_diffusion.cli.train", "debug=default", f"hydra.run.dir={run_dir}",
               f"paths.summary_csv={tmp_path / 'summary.csv'}", "trainer.enable_progress_bar=false", *args]
    return subprocess.Popen(command, cwd=tmp_path, env=cli_env(cache_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def tensorboard_tags(run_dir: Path) -> dict[str, set[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return {"scalars": set(events.Tags()["scalars"]), "images": set(events.Tags()["images"])}


@pytest.mark.slow
def test_sd_train_writes_every_artifact(tmp_path, cache_dir):
    run_dir = tmp_path / "outputs" / "run"
    finish(sd_train([], run_dir, tmp_path, cache_dir))
    for name in [".hydra/config.yaml", ".hydra/overrides.yaml", "checkpoints/last.ckpt", "samples.png",
                 "samples.npz", "metrics.json"]:
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 30
    assert np.isfinite(metrics["fid_classifier@64"]) and metrics["objective"] == metrics["recognisable_classifier@64"]
    assert "fid_floor_classifier@180" in metrics and "kid_classifier@64" in metrics
    with np.load(run_dir / "samples.npz") as data:
        images = data["images"]
    assert images.shape == (64, 1, 8, 8) and images.min() >= -1 and images.max() <= 1
    tags = tensorboard_tags(run_dir)
    assert {"train/loss", "val/loss"} <= tags["scalars"]
    assert any(tag.startswith("lr-") for tag in tags["scalars"])
    assert {"samples/during_training", "samples/final"} <= tags["images"]
    rows = read_rows(tmp_path / "summary.csv")
    assert len(rows) == 1 and rows[0]["run_id"] == str(run_dir)
    assert float(rows[0]["fid_classifier@64"]) == pytest.approx(metrics["fid_classifier@64"])
    assert rows[0]["git_commit"]


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path, cache_dir):
    first = tmp_path / "outputs" / "killed"
    last = first / "checkpoints" / "last.ckpt"
    args = ["trainer.max_steps=100000", "scheduler.total_steps=400", "trainer.val_check_interval=50",
            "callbacks.model_checkpoint.every_n_train_steps=20", "callbacks.sample_grid.every_n_steps=1000"]
    process = sd_train(args, first, tmp_path, cache_dir, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        if last.exists() and torch.load(last, weights_only=False, map_location="cpu")["global_step"] >= 60:
            break
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    saved = torch.load(last, weights_only=False, map_location="cpu")
    saved_step = saved["global_step"]
    assert saved_step >= 60 and not (first / "metrics.json").exists()

    second = tmp_path / "outputs" / "resumed"
    max_steps = saved_step + 20
    finish(sd_train([f"ckpt_path={last}", f"trainer.max_steps={max_steps}", "scheduler.total_steps=400"],
                    second, tmp_path, cache_dir))
    resumed = torch.load(second / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert resumed["global_step"] == max_steps
    # EMA, optimizer and scheduler continued from the saved step, not from zero
    assert int(resumed["state_dict"]["ema.num_updates"]) == max_steps
    adam_state = next(iter(resumed["optimizer_states"][0]["state"].values()))
    assert int(adam_state["step"]) == max_steps
    assert resumed["lr_schedulers"][0]["last_epoch"] == max_steps
    metrics = json.loads((second / "metrics.json").read_text())
    assert metrics["global_step"] == max_steps
    rows = read_rows(tmp_path / "summary.csv")
    assert [row["run_id"] for row in rows] == [str(second)]


def test_nan_guard_keeps_last_good_checkpoint(cfg_debug, tmp_path):
    components = build(cfg_debug)
    module, datamodule = components.module, components.datamodule

    class PoisonAfter(MSELoss):  # the default loss=mse, NaN from step 15 on
        def __call__(self, output, target, context=None):
            value = super().__call__(output, target, context)
            return value * float("nan") if module.global_step >= 15 else value

    module.loss_fn = PoisonAfter()
    ckpt_dir = tmp_path / "ckpts"
    from lightning.pytorch.callbacks import ModelCheckpoint

    trainer = Trainer(max_steps=30, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0,
                                                 every_n_train_steps=10)],
                      plugins=[AtomicCheckpointIO()], limit_val_batches=0)
    with pytest.raises(NonFiniteLossError, match="step 15"):
        trainer.fit(module, datamodule=datamodule)
    saved = torch.load(ckpt_dir / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 10
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
    assert all(torch.isfinite(p).all() for p in module.model.parameters())


def _append_many(path: str, worker: int, count: int) -> None:
    for i in range(count):
        append_row(path, {"run_id": f"w{worker}-{i}", "value": float(i), f"only_w{worker}": worker})


def test_concurrent_summary_appends_lose_nothing(tmp_path):
    path = str(tmp_path / "summary.csv")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(path, w, 15)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    rows = read_rows(path)
    assert sorted(row["run_id"] for row in rows) == sorted(f"w{w}-{i}" for w in range(4) for i in range(15))
    assert {f"only_w{w}" for w in range(4)} <= set(rows[0])
    for row in rows:
        worker = row["run_id"].split("-")[0][1:]
        assert row[f"only_w{worker}"] == worker


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path, cache_dir):
    run_dir = tmp_path / "outputs" / "ddp"
    finish(sd_train(["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_steps=6",
                     "trainer.val_check_interval=3", "callbacks.sample_grid.every_n_steps=3"],
                    run_dir, tmp_path, cache_dir), timeout=400)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 6
    assert len(read_rows(tmp_path / "summary.csv")) == 1
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6


def test_train_function_and_sd_sample(cfg_debug, tmp_path, cache_dir):
    metrics = train(cfg_debug)
    run_dir = Path(cfg_debug.paths.output_dir)
    assert metrics["objective"] == metrics["recognisable_classifier@64"]
    assert metrics["sampler_nfe"] == 5

    module = load_module(run_dir / "checkpoints" / "last.ckpt")
    whole = module.generate(6, seed=3, batch_size=6)
    split = module.generate(6, seed=3, batch_size=4)
    torch.testing.assert_close(whole, split)

    out = tmp_path / "sampled"
    command = [sys.executable, "-m", "spectral_diffusion.cli.sample", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
               "sampler=ddpm", "sampler.steps=4", "n=10", f"hydra.run.dir={out}"]
    result = subprocess.run(command, cwd=REPO_ROOT, env=cli_env(cache_dir), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(out / "samples.npz") as data:
        assert data["images"].shape == (10, 1, 8, 8)
    assert (out / "samples.png").is_file()
