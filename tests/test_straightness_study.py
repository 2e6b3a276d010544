"""``benchmarks/straightness.py`` (issue 17, item 5): the aggregation over seeds against scipy's t quantiles, the
permutation comparisons, table and figure, bad input refused naming the flag, and a tiny end-to-end study (8×8
digits, a few steps) that resumes without training again."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys

import numpy as np
import pytest
from scipy import stats

from .conftest import REPO_ROOT, cli_env

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))  # the script imports its neighbours (cli_runs, results_csv)
_spec = importlib.util.spec_from_file_location("straightness_study", REPO_ROOT / "benchmarks" / "straightness.py")
study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study)


QUIET = ["~logger", "~callbacks.lr_monitor"]


def synthetic_row(process, stage, seed, value, deviation, t=(1.0, 0.5)):
    return {"process": process, "stage": stage, "seed": str(seed), "straightness": str(value),
            "straightness_ci_low": str(value - 0.01), "straightness_ci_high": str(value + 0.02),
            "deviation_peak": str(max(deviation)), "deviation_peak_t": "1.0", "t": json.dumps(list(t)),
            "deviation": json.dumps(list(deviation)), "trajectories": "8", "ode_steps": "2", "measure_seed": "0",
            "bootstrap": "20", "train_steps": "4" if stage == "teacher" else "2", "run_cpu_minutes": "0.5",
            "objective_name": "val_loss", "objective": "0.8", "measure_seconds": "1", "checkpoint": "x"}


ROWS = [synthetic_row("gaussian", "teacher", s, v, d) for s, v, d in
        [(2, 0.25, (0.3, 0.1)), (0, 0.24, (0.1, 0.2)), (1, 0.2, (0.2, 0.3))]] + \
       [synthetic_row("flow", "teacher", s, v, (0.01, 0.02)) for s, v in [(0, 0.05), (1, 0.07), (2, 0.04)]] + \
       [synthetic_row("flow", "reflow", s, v, (0.0, 0.01)) for s, v in [(0, 0.01), (1, 0.02), (2, 0.015)]]


def test_seed_aggregation_is_the_student_t_interval_by_hand():
    summaries = study.aggregate(ROWS)
    assert [(s["process"], s["stage"]) for s in summaries] == [("gaussian", "teacher"), ("flow", "teacher"),
                                                               ("flow", "reflow")]
    gaussian = summaries[0]
    values = [0.24, 0.2, 0.25]  # sorted by seed 0, 1, 2
    mean = sum(values) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    half = stats.t.ppf(0.975, df=2) * sd / math.sqrt(3)  # 4.303 · s / √3
    assert gaussian["seeds"] == [0, 1, 2] and gaussian["n"] == 3
    assert gaussian["mean"] == pytest.approx(mean) and gaussian["std"] == pytest.approx(sd)
    assert (gaussian["ci_low"], gaussian["ci_high"]) == pytest.approx((mean - half, mean + half))
    assert np.allclose(gaussian["seed_intervals"], [(0.23, 0.26), (0.19, 0.22), (0.24, 0.27)])
    assert gaussian["deviation"] == pytest.approx([0.2, 0.2])  # mean profile over seeds, step by step
    # one seed: no interval over seeds
    single = study.aggregate([ROWS[0]])[0]
    assert single["n"] == 1 and math.isnan(single["ci_low"]) and math.isnan(single["ci_high"])


def test_comparisons_use_the_permutation_test_and_name_its_floor():
    found = {(c["a"], c["b"]): c for c in study.comparisons(study.aggregate(ROWS))}
    versus = found[("flow, before reflow", "gaussian, before reflow")]
    assert not versus["paired"] and versus["difference"] == pytest.approx(0.16 / 3 - 0.69 / 3)
    # fully separated 3 against 3: the exact two-sided p is 2 of the C(6, 3) = 20 splits
    assert versus["p"] == pytest.approx(0.1) and versus["p_floor"] == pytest.approx(0.1) and not versus["overlap"]
    reflow = found[("flow, after reflow", "flow, before reflow")]
    differences = np.array([0.01 - 0.05, 0.02 - 0.07, 0.015 - 0.04])
    assert reflow["paired"] and reflow["difference"] == pytest.approx(differences.mean())
    assert reflow["p"] == pytest.approx(0.25) and reflow["p_floor"] == pytest.approx(0.25)  # 2 of 2³ sign flips
    half = stats.t.ppf(0.975, 2) * differences.std(ddof=1) / math.sqrt(3)
    assert reflow["difference_ci"] == pytest.approx((differences.mean() - half, differences.mean() + half))
    assert study.smallest_p(4, 4, False) == pytest.approx(2 / 70) and study.smallest_p(2, 3, False) == 0.1
    assert study.comparisons(study.aggregate([r for r in ROWS if r["seed"] == "0"])) == []  # one seed: no test


def test_table_and_figure_are_written(tmp_path):
    study.write_table(ROWS, tmp_path / "straightness.md")
    text = (tmp_path / "straightness.md").read_text()
    gaussian = study.aggregate(ROWS)[0]
    summary = study.bracket(gaussian["mean"], gaussian["ci_low"], gaussian["ci_high"])
    assert f"| gaussian | {summary} | – | 3/0 |" in text
    assert summary == "0.23 [0.1643, 0.2957]"  # 0.23 ± t(0.975, 2) · 0.02646 / √3 = 0.23 ± 0.0657
    assert "| flow | before reflow | 1 | 0.07 [0.06, 0.09] |" in text  # a seed's own bootstrap interval
    assert "| flow, after reflow | flow, before reflow |" in text and "8 deterministic DDIM" in text
    study.plot(ROWS, tmp_path / "straightness.png")
    assert (tmp_path / "straightness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, flag", [
    (["--processes", "gaussian", "nope"], "--processes"),
    (["--seeds"], "--seeds"),
    (["--steps", "0"], "--steps"),
    (["--reflow-steps", "-3"], "--reflow-steps"),
    (["--trajectories", "0"], "--trajectories"),
    (["--processes", "flow", "--reflow-processes", "gaussian"], "--reflow-processes"),
], ids=["unknown-process", "empty-seeds", "steps", "reflow-steps", "trajectories", "reflow-not-trained"])
def test_bad_input_is_refused_naming_the_flag_before_anything_runs(argv, flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        study.main(["--out", str(tmp_path / "out"), *argv])
    assert raised.value.code == 2 and flag in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_results_of_other_settings_are_not_mixed_in(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with (out / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=study.COLUMNS)
        writer.writeheader()
        writer.writerow({key: ROWS[0].get(key, "") for key in study.COLUMNS})  # 8 trajectories, 4 steps
    with pytest.raises(SystemExit, match="trajectories 8 \\(now 16\\)"):
        study.main(["--out", str(out), "--processes", "gaussian", "--seeds", "0", "--steps", "4",
                    "--trajectories", "16", "--ode-steps", "2", "--bootstrap", "20"])
    assert not (out / "runs" / "gaussian_seed0").exists()


@pytest.mark.slow
def test_tiny_study_end_to_end_resumes_without_training_again(tmp_path, cache_dir, monkeypatch):
    """flow, one seed, 4 sd-train steps on 8×8 digits; first without reflow, then with it: the second invocation
    trains only the reflow student, the third trains and measures nothing."""
    for key, value in cli_env(cache_dir).items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "out"
    argv = ["--out", str(out), "--processes", "flow", "--seeds", "0", "--steps", "4", "--reflow-steps", "2",
            "--num-pairs", "8", "--pair-steps", "2", "--trajectories", "6", "--ode-steps", "3", "--bootstrap", "20",
            "--eval-samples", "8", "--override", "debug=default", "features=none", *QUIET,
            "--distill-override", "features=none", *QUIET]
    assert study.main([*argv, "--reflow-processes"]) == 0
    rows = study.read_results(out / "results.csv")
    assert [(r["process"], r["stage"], r["seed"]) for r in rows] == [("flow", "teacher", "0")]
    teacher_log = (out / "runs" / "flow_seed0.log").read_text()
    first = rows[0]
    assert 0 <= float(first["straightness_ci_low"]) <= float(first["straightness"]) \
        <= float(first["straightness_ci_high"])
    assert len(json.loads(first["deviation"])) == 3 and first["objective_name"] == "val_loss"

    assert study.main(argv) == 0  # default --reflow-processes: flow
    rows = study.read_results(out / "results.csv")
    assert [(r["stage"]) for r in rows] == ["teacher", "reflow"]
    assert (out / "runs" / "flow_seed0.log").read_text() == teacher_log  # the teacher was not trained again
    assert (out / "runs" / "flow_seed0_reflow" / "checkpoints" / "student.ckpt").is_file()

    def no_run(*_args, **_kwargs):
        raise AssertionError("a finished study ran sd-train or sd-distill again")

    monkeypatch.setattr(study, "resumable_run", no_run)
    monkeypatch.setattr(study, "measure", no_run)
    assert study.main(argv) == 0
    assert study.read_results(out / "results.csv") == rows
    for name in ("straightness.md", "straightness.png", "costs.json"):
        assert (out / name).is_file()
    assert "| flow |" in (out / "straightness.md").read_text()

    # an interrupted teacher (last.ckpt, no metrics.json) whose cell was never written: resumed from its last.ckpt
    # and measured again, the same value as before (the same weights, the same trajectories)
    monkeypatch.undo()
    for key, value in cli_env(cache_dir).items():
        monkeypatch.setenv(key, value)
    (out / "runs" / "flow_seed0" / "metrics.json").unlink()
    with (out / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=study.COLUMNS)
        writer.writeheader()
        writer.writerow(rows[1])
    commands = []
    cli_runs = sys.modules["cli_runs"]
    run_command = cli_runs.run_command

    def recorded(command, log):
        commands.append(command)
        return run_command(command, log)

    monkeypatch.setattr(cli_runs, "run_command", recorded)
    assert study.main(argv) == 0
    last = out / "runs" / "flow_seed0" / "checkpoints" / "last.ckpt"
    assert len(commands) == 1 and commands[0][-1] == f"ckpt_path={last}"
    again = {(r["stage"]): r for r in study.read_results(out / "results.csv")}
    assert again["teacher"]["straightness"] == rows[0]["straightness"] and again["reflow"] == rows[1]
