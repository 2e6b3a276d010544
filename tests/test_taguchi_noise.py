"""Noise against effects in a Taguchi sweep: row intervals, pooled replicate noise, the LSD of a factor's effect,
measurement intervals without replicates, and their round trip through results.csv."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from spectral_diffusion.taguchi import Factor, choose_array
from spectral_diffusion.taguchi.noise import noise_markdown, noise_report
from spectral_diffusion.taguchi.sweep_folder import JobResult, SweepSpec, read_results_csv, write_results_csv


def l8_design(replicates):
    return choose_array([Factor(name, ["low", "high"]) for name in "ABC"], array="L8", replicates=replicates)


def test_pooled_sigma_row_intervals_and_lsd_match_hand_computation():
    design = l8_design(2)
    rng = np.random.default_rng(0)
    responses = 5.0 + 3.0 * design.level_indices("A")[:, None] + rng.normal(0.0, 0.5, (8, 2))
    report = noise_report(design, responses)
    # pooled within-row std: Σ (y - ȳ_r)² / Σ (n_r - 1), 8 df
    residual = responses - responses.mean(axis=1, keepdims=True)
    sigma = math.sqrt(float((residual ** 2).sum()) / 8)
    assert report.source == "replicates" and report.df == 8 and report.sigma == pytest.approx(sigma)
    t = stats.t.ppf(0.975, 8)
    row = report.rows[3]
    assert (row.low, row.high) == pytest.approx((responses[3].mean() - t * sigma / math.sqrt(2),
                                                 responses[3].mean() + t * sigma / math.sqrt(2)))
    # balanced L8: each level mean averages 4 rows of 2 runs, Var(difference) = σ² (2 / 8)
    factor = {f.factor: f for f in report.factors}
    assert factor["A"].least_significant_difference == pytest.approx(t * sigma * math.sqrt(2 / 8))
    assert factor["A"].levels == ("low", "high") and not factor["A"].noise_larger  # 3.0 against about 0.6
    assert factor["A"].effect == pytest.approx(np.ptp([responses[design.level_indices("A") == level].mean()
                                                       for level in (0, 1)]))


def test_null_factor_is_called_larger_than_the_noise_at_the_nominal_rate():
    """With no true effects, each factor's Δ > LSD is a two-sided 5 % t-test: about 5 % of sweeps."""
    design = l8_design(2)
    rng = np.random.default_rng(1)
    calls = [not factor.noise_larger
             for _ in range(2000)
             for factor in noise_report(design, rng.normal(0.0, 1.0, (8, 2))).factors[:1]]
    assert 0.035 < np.mean(calls) < 0.065


def test_measurement_intervals_stand_in_without_replicates_and_say_they_are_a_lower_bound():
    design = l8_design(1)
    responses = np.arange(8.0)[:, None]
    z = stats.norm.ppf(0.975)
    intervals = {job: (float(responses[job, 0]) - 2.0 * z, float(responses[job, 0]) + 2.0 * z) for job in range(8)}
    report = noise_report(design, responses, intervals)
    assert report.source == "measurement intervals" and report.sigma == pytest.approx(2.0)
    assert (report.rows[5].low, report.rows[5].high) == intervals[5]
    assert report.factors[0].least_significant_difference == pytest.approx(z * 2.0 * math.sqrt(2 / 4))
    assert "lower bound" in report.note
    no_noise = noise_report(design, responses)
    assert no_noise.source == "none" and "no estimate of its noise" in no_noise.note
    assert "no noise estimate" in noise_markdown(no_noise, design)


def test_noise_section_names_the_undecided_factors():
    design = l8_design(2)
    responses = np.tile(np.array([[0.0, 1.0]]), (8, 1)) + 10.0 * design.level_indices("B")[:, None]
    report = noise_report(design, responses)
    text = noise_markdown(report, design)
    assert "larger than the effect of A, C" in report.note and "Effects larger than the noise: B" in report.note
    assert text.count("noise larger than the effect") == 2 and "| 0 | A=low, B=low, C=low | 2 |" in text


def test_results_csv_keeps_measurement_intervals_and_reads_older_files(tmp_path):
    design = l8_design(1)
    spec = SweepSpec(design=design, response="fid", sn="smaller_is_better", on_failure="record")
    results = [JobResult(0, 0, 0, 0, "ok", 1.5, "0", "", (1.0, 2.0)), JobResult(1, 1, 0, 0, "ok", 2.5, "1", "")]
    path = write_results_csv(tmp_path / "results.csv", spec, results)
    assert [r.interval for r in read_results_csv(path)] == [(1.0, 2.0), None]
    old = "\n".join(",".join(line.split(",")[:-2]) for line in path.read_text().splitlines())
    path.write_text(old + "\n")
    assert [r.interval for r in read_results_csv(path)] == [None, None]
