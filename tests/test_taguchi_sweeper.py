"""Tests for the Taguchi Hydra sweeper, ``sd-taguchi``, and that every default factor changes what is computed.

The sweeps run the real ``sd-train`` in a subprocess with jobs shrunk to seconds.
"""

from __future__ import annotations

import copy
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hydra_plugins.taguchi_sweeper._impl import override_value
from hydra_plugins.taguchi_sweeper.taguchi_sweeper import TaguchiSweeper, TaguchiSweeperConf, _default_factors
from spectral_diffusion.cli.taguchi import main as taguchi_main
from spectral_diffusion.pipeline import build
from spectral_diffusion.taguchi import Factor, choose_array
from .conftest import REPO_ROOT, cli_env, compose_train

# Jobs of a few seconds: the debug config with fewer steps and samples still.
TINY_JOB = [
    "debug=default", "trainer.max_steps=6", "trainer.val_check_interval=3", "scheduler.warmup_steps=2",
    "evaluation.num_samples=32", "evaluation.batch_size=32", "evaluation.kid_subset_size=16",
    "evaluation.grid_size=16", "callbacks.sample_grid.every_n_steps=6", "callbacks.sample_grid.num_samples=4",
    "callbacks.model_checkpoint.every_n_train_steps=6", "trainer.enable_progress_bar=false",
]


def _fixed(overrides: list[str]) -> str:
    return "hydra.sweeper.fixed=[" + ",".join(f'"{o}"' for o in overrides) + "]"


def run_sweep(sweep_dir: Path, cache_dir: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "spectral_diffusion.cli.train", "-m", "hydra/sweeper=taguchi",
        f"hydra.sweep.dir={sweep_dir}", _fixed(TINY_JOB), f"paths.summary_csv={sweep_dir.parent / 'summary.csv'}",
        *args,
    ]
    return subprocess.run(command, cwd=sweep_dir.parent, env=cli_env(cache_dir), capture_output=True, text=True,
                          timeout=600)


def job_folders(sweep_dir: Path) -> list[str]:
    return sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()) if sweep_dir.exists() else []


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# --- discovery and config -------------------------------------------------------------------------

def test_sweeper_is_discovered_by_hydra():
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    # Hydra's scan executes the module afresh, so compare the classes by their import path.
    found = {f"{c.__module__}.{c.__qualname__}" for c in Plugins.instance().discover(Sweeper)}
    assert f"{TaguchiSweeper.__module__}.{TaguchiSweeper.__qualname__}" in found
    # The plugin package sits in the namespace package beside the installed joblib launcher.
    assert not (REPO_ROOT / "hydra_plugins" / "__init__.py").exists()


def test_default_sweep_is_an_l8_of_five_two_level_factors():
    conf = TaguchiSweeperConf()
    design = choose_array([Factor(k, v) for k, v in conf.factors.items()], conf.interactions, conf.array,
                          conf.replicates)
    assert design.array.name == "L8" and design.n_jobs == 8
    assert conf.response == "objective" and conf.sn == "auto"


def test_sn_auto_refuses_a_response_without_a_direction_before_any_job():
    from hydra_plugins.taguchi_sweeper._impl import TaguchiSweeperImpl
    from spectral_diffusion.utils.validation import ConfigError

    def check(response, sn="auto"):
        TaguchiSweeperImpl({}, "auto", [], 1, response, sn, "record", 0, [], None)._check_settings()

    with pytest.raises(ConfigError, match=r"hydra.sweeper.sn=auto cannot tell which way .*'hf_energy_ratio'.*"
                                          r"smaller_is_better"):
        check("hf_energy_ratio")
    check("hf_energy_ratio", "nominal_is_best_mean_var")  # an explicit S/N is the user's call
    check("recognisable_classifier@500")
    check("objective")  # its direction is each job's objective_direction, read after the jobs


@pytest.mark.parametrize(
    "value, text",
    [("cosine", "cosine"), (True, "true"), (1e-4, "0.0001"), (3, "3"), ("a b", "'a b'"), ("true", "'true'"),
     ([1, 2], "[1,2]"), (None, "null"), ("it's", "'it\\'s'")],
)
def test_levels_become_hydra_override_text(value, text):
    assert override_value(value) == text


# --- validation before anything runs ----------------------------------------------------------------

@pytest.mark.parametrize(
    "args, message",
    [
        (["optimizer.no_such_key=1,2", "optimizer=adam,adamw"], "optimizer.no_such_key"),
        (["sampler=ddim,no_such_sampler"], "no_such_sampler"),
        (["hydra.sweeper.array=L9", "optimizer=adam,adamw", "prediction=eps,v"], "L9"),
        (["model.groups=2,4", "model.base_channels=6,8", "optimizer=adam,adamw",
          "hydra.sweeper.array=L4", "hydra.sweeper.interactions=[[A,B]]"], "optimizer"),
        (["optimizer=adam,adamw", "prediction=eps,v", "optimizer=adam"], "also fixed"),
        (["optimizer=adam,adamw", "hydra.sweeper.sn=bigger_is_better"], "hydra.sweeper.sn"),
    ],
    ids=["missing-value-key", "missing-group-option", "levels-do-not-fit-array", "interaction-collides",
         "factor-also-fixed", "unknown-sn"],
)
def test_bad_sweeps_fail_before_any_job(tmp_path, cache_dir, args, message):
    sweep_dir = tmp_path / "sweep"
    completed = run_sweep(sweep_dir, cache_dir, *args)
    assert completed.returncode == 2
    assert message in completed.stderr and "Traceback" not in completed.stderr
    assert job_folders(sweep_dir) == [] and not (sweep_dir / "design.csv").exists()


# --- real sweeps --------------------------------------------------------------------------------

# L4 rows (groups, base_channels): (4, 6) fails (4 does not divide 6), the rest run; column 3 is left
# for error, so three rows still determine the main-effects model and the failed row is filled.
FAILING_ROW_FACTORS = ["model.groups=4,2", "model.base_channels=6,8"]


@pytest.fixture(scope="module")
def recorded_sweep(tmp_path_factory, cache_dir) -> Path:
    sweep_dir = tmp_path_factory.mktemp("taguchi") / "sweep"
    completed = run_sweep(sweep_dir, cache_dir, *FAILING_ROW_FACTORS, "hydra.sweeper.on_failure=record")
    assert completed.returncode == 0, completed.stderr[-3000:]
    return sweep_dir


@pytest.mark.slow
def test_sweep_writes_design_results_and_analysis(recorded_sweep):
    design = read_csv(recorded_sweep / "design.csv")
    assert [(r["job"], r["row"], r["model.groups"], r["model.base_channels"]) for r in design] == [
        ("0", "0", "4", "6"), ("1", "1", "4", "8"), ("2", "2", "2", "6"), ("3", "3", "2", "8"),
    ]
    assert design[2]["overrides"].endswith("model.groups=2 model.base_channels=6 seed=0")
    # design.csv exists before the first job's folder is made.
    assert (recorded_sweep / "design.csv").stat().st_mtime <= (recorded_sweep / "0" / ".hydra").stat().st_mtime

    results = read_csv(recorded_sweep / "results.csv")
    assert [r["status"] for r in results] == ["failed", "ok", "ok", "ok"]
    assert "model.groups=4" in results[0]["error"]
    for row in results[1:]:
        metrics = (recorded_sweep / row["output_dir"] / "metrics.json").read_text()
        assert row["objective"] and f"{float(row['objective'])!r}"[:8] in metrics

    analysis = (recorded_sweep / "analysis.md").read_text()
    assert "1 of 4 jobs failed: job 0 (row 0, replicate 0" in analysis
    # sn=auto: the default objective, recognisability, is analysed larger-is-better
    assert "S/N larger_is_better (sn=auto: recognisable_classifier@32 is larger-is-better)" in analysis
    assert "Policy least_squares" in analysis and "| 0 | 4 | 6 | failed |" in analysis
    for name in ("main_effects.png", "anova.csv", "response_tables.csv", "taguchi.json"):
        assert (recorded_sweep / name).stat().st_size > 0
    assert any((recorded_sweep / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_sd_taguchi_analyze_reproduces_the_sweep_analysis(recorded_sweep, tmp_path, capsys):
    original = (recorded_sweep / "analysis.md").read_text()
    assert taguchi_main(["analyze", str(recorded_sweep), f"out={tmp_path / 'again'}"]) == 0
    assert (tmp_path / "again" / "analysis.md").read_text() == original
    assert taguchi_main(["analyze", str(recorded_sweep), "sn=smaller_is_better", f"out={tmp_path / 'smaller'}"]) == 0
    smaller = (tmp_path / "smaller" / "analysis.md").read_text()
    assert "S/N ratio: smaller_is_better" in smaller and smaller != original
    assert taguchi_main(["analyze", str(recorded_sweep), "response=val_loss", f"out={tmp_path / 'val'}"]) == 0
    val = (tmp_path / "val" / "analysis.md").read_text()
    assert "Response: `val_loss`" in val and "S/N smaller_is_better (sn=auto: val_loss is smaller-is-better)" in val
    capsys.readouterr()


@pytest.mark.slow
def test_on_failure_abort_stops_at_the_failed_job(tmp_path, cache_dir):
    sweep_dir = tmp_path / "sweep"
    completed = run_sweep(sweep_dir, cache_dir, *FAILING_ROW_FACTORS, "hydra.sweeper.on_failure=abort",
                          "hydra.sweeper.max_batch_size=1")
    assert completed.returncode != 0
    assert "on_failure=abort" in completed.stderr and "job 0" in completed.stderr
    assert job_folders(sweep_dir) == ["0"]
    assert [r["status"] for r in read_csv(sweep_dir / "results.csv")] == ["failed"]
    assert not (sweep_dir / "analysis.md").exists()


@pytest.mark.slow
def test_sweep_through_the_joblib_launcher(tmp_path, cache_dir):
    """Parallel local jobs: the same design, each job's response read from its own folder."""
    sweep_dir = tmp_path / "sweep"
    completed = run_sweep(sweep_dir, cache_dir, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                          "model.base_channels=8,16", "prediction=eps,v")
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = read_csv(sweep_dir / "results.csv")
    assert [r["status"] for r in results] == ["ok"] * 4
    for row in results:
        metrics = json.loads((sweep_dir / row["output_dir"] / "metrics.json").read_text())
        assert float(row["objective"]) == pytest.approx(metrics["objective"])
    assert (sweep_dir / "analysis.md").is_file()


@pytest.mark.slow
def test_sweep_through_the_submitit_local_launcher_records_the_failed_job(tmp_path, cache_dir):
    """Each job in its own process (submitit's local executor, two at a time); the job that raises is
    recorded as failed, exactly as under Hydra's basic and joblib launchers."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="hydra-submitit-launcher is a dependency: reinstall the package")
    sweep_dir = tmp_path / "sweep"
    completed = run_sweep(sweep_dir, cache_dir, "hydra/launcher=submitit_local", "hydra.sweeper.max_batch_size=2",
                          *FAILING_ROW_FACTORS)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = read_csv(sweep_dir / "results.csv")
    assert [r["status"] for r in results] == ["failed", "ok", "ok", "ok"]
    assert results[0]["error"].startswith("ConfigError: model.groups=4")
    for row in results[1:]:
        metrics = json.loads((sweep_dir / row["output_dir"] / "metrics.json").read_text())
        assert float(row["objective"]) == pytest.approx(metrics["objective"])
    # One submitit job (a process of its own, named by its pid) per design row, each with its result.
    jobs = [p for p in (sweep_dir / ".submitit").iterdir() if p.name.isdigit()]
    assert len(jobs) == 4 and all(len(list(job.glob("*_result.pkl"))) == 1 for job in jobs)
    assert "1 of 4 jobs failed: job 0" in (sweep_dir / "analysis.md").read_text()


# --- sd-taguchi design ------------------------------------------------------------------------------

def test_sd_taguchi_design_prints_the_run_table(capsys):
    factors = ["noise=gaussian,equalized", "model.freq_attention=false,true", "sampler=ddim,dpm_solver_pp",
               "loss=mse,frequency_balanced", "optimizer=adam,adaptive"]
    assert taguchi_main(["design", "L8", *factors]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.endswith(" seed=0 |")]
    assert len(lines) == 8
    assert lines[0].startswith("| 0 | 0 | 0 | gaussian | false | ddim | mse | adam |")
    assert taguchi_main(["design", "L4", "a=1,2,3"]) == 2
    assert "L9 would fit" in capsys.readouterr().err


# --- proof that every default factor changes what is computed ------------------------------------------

def _build_level(tmp_path: Path, cache_dir: Path, key: str, level: str):
    base = {k: v[0] for k, v in _default_factors().items()}
    base[key] = level
    overrides = ["debug=default", *(f"{k}={v}" for k, v in base.items())]
    cfg = compose_train(overrides, tmp_path / f"{key.replace('/', '_')}-{level}", cache_dir)
    torch.manual_seed(0)
    return cfg, build(cfg).module


@pytest.fixture(scope="module")
def factor_builds(tmp_path_factory, cache_dir):
    tmp_path = tmp_path_factory.mktemp("factors")
    return {
        key: [_build_level(tmp_path, cache_dir, key, level) for level in levels]
        for key, levels in _default_factors().items()
    }


def test_default_factors_cover_noise_model_sampler_loss_optimizer():
    assert list(_default_factors()) == ["noise", "model.freq_attention", "sampler", "loss", "optimizer"]


def test_noise_changes_the_training_noise_and_the_prior(factor_builds):
    (_, gaussian), (_, equalized) = factor_builds["noise"]
    t = torch.tensor([0.1, 0.5, 0.9])
    like = equalized.process.to_basis(torch.zeros(3, 1, 8, 8))
    _, s_white = gaussian.process.coefficients(t, like)
    _, s_equalized = equalized.process.coefficients(t, like)
    # white: one σ(t) per sample; equalized: σ(t)·w(f), more noise where the data have more power
    assert torch.broadcast_to(s_white, like.shape).flatten(1).std(1).max() == 0
    assert torch.broadcast_to(s_equalized, like.shape).flatten(1).std(1).min() > 1e-2
    generator = torch.Generator().manual_seed(0)
    prior_white = gaussian.process.prior((2, 1, 8, 8), generator)
    prior_equalized = equalized.process.prior((2, 1, 8, 8), torch.Generator().manual_seed(0))
    assert (prior_white - prior_equalized).abs().max() > 1e-2


def test_freq_attention_changes_the_network_output(factor_builds):
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.full((4,), 0.5)
    (_, plain), (_, attention) = factor_builds["model.freq_attention"]
    assert plain.num_parameters() < attention.num_parameters()
    with torch.no_grad():
        # Output convolutions and the attention's output projection start at zero: give every weight of the
        # shared layers the same random values and the attention blocks random ones.
        generator = torch.Generator().manual_seed(0)
        for p in attention.model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
        plain.model.load_state_dict(attention.model.state_dict(), strict=False)
        assert (plain(x, t) - attention(x, t)).abs().max() > 1e-3


def test_sampler_changes_the_trajectory(factor_builds):
    (cfg_ddim, ddim), (_, dpm) = factor_builds["sampler"]
    assert int(cfg_ddim.sampler.steps) == int(dpm.sampler.keywords["steps"])
    module = ddim  # one network; only the sampling rule differs
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for p in module.model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
        module.ema.module.load_state_dict(module.model.state_dict())
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out_ddim = ddim.sampler(module.denoise, module.process, x_T.clone(), generator=torch.Generator().manual_seed(3))
        out_dpm = dpm.sampler(module.denoise, module.process, x_T.clone(), generator=torch.Generator().manual_seed(3))
    assert (out_ddim - out_dpm).abs().max() > 1e-2


def test_loss_changes_the_loss_value(factor_builds):
    (_, mse), (_, balanced) = factor_builds["loss"]
    with torch.no_grad():
        # a non-zero network (the output convolution starts at zero), the same for both
        generator = torch.Generator().manual_seed(0)
        for p in mse.model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    balanced.model.load_state_dict(mse.model.state_dict())
    x0 = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        loss_mse = mse._common_step(x0, torch.Generator().manual_seed(5))
        loss_balanced = balanced._common_step(x0, torch.Generator().manual_seed(5))
    assert abs(float(loss_mse) - float(loss_balanced)) > 1e-3


def test_optimizer_changes_the_step(factor_builds):
    (_, adam), (_, adaptive) = factor_builds["optimizer"]
    adaptive.model.load_state_dict(adam.model.state_dict())
    stepped = []
    for module in (adam, adaptive):
        model = copy.deepcopy(module.model)
        optimizer = module.optimizer_factory(model.parameters())
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        optimizer.step()
        stepped.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    # Adam's first step moves each weight by lr = 2e-3; Prodigy's by its initial step-size estimate d0 = 1e-6.
    assert (stepped[0] - stepped[1]).abs().max() > 1e-4
