"""sd-compare (evaluation.compare): runs grouped by overrides without the seed, t intervals over seeds, permutation
p-values that are uniform under the null and exact on small cases, and errors that name the folder."""

import itertools
import json
import math

import numpy as np
import pytest
import yaml
from scipy import stats

from spectral_diffusion.cli.compare import main
from spectral_diffusion.evaluation.compare import compare_runs, permutation_p_value, t_interval
from spectral_diffusion.utils.validation import ConfigError


def make_run(folder, overrides, metrics):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_t_interval_is_scipys():
    values = np.array([1.0, 2.0, 4.0, 7.0])
    expected = stats.t.interval(0.9, 3, loc=values.mean(), scale=stats.sem(values))
    assert t_interval(values, 0.9) == pytest.approx(expected)
    assert all(math.isnan(v) for v in t_interval(values[:1], 0.9))


def test_exact_permutation_p_values_by_enumeration():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])
    # the observed split is the most extreme of C(6,3) = 20, together with its mirror: p = 2/20
    assert permutation_p_value(a, b) == pytest.approx(0.1)
    differences = a - np.array([1.5, 2.0, 3.5])  # -0.5, 0, -0.5
    expected = np.mean([abs(np.dot(signs, differences)) >= abs(differences.sum()) - 1e-12
                        for signs in itertools.product((1, -1), repeat=3)])
    assert permutation_p_value(a, np.array([1.5, 2.0, 3.5]), paired=True) == pytest.approx(expected)


@pytest.mark.parametrize("paired", [False, True])
def test_permutation_p_values_are_uniform_under_the_null(paired):
    """300 null comparisons of 9 against 9 normal values (the relabellings, 48,620 or 512 sign patterns, are
    sampled or enumerated): the p-values must pass a Kolmogorov–Smirnov test against U(0, 1) loosely (statistic
    below 0.1; the 1 % critical value at n = 300 is 0.094, and the discreteness of 512 sign patterns adds at most
    1/512), and a shifted alternative must give small p-values."""
    rng = np.random.default_rng(0)
    p_values = []
    for trial in range(300):
        a, b = rng.normal(size=9), rng.normal(size=9)
        p_values.append(permutation_p_value(a, b, paired=paired, permutations=999, seed=trial))
    assert stats.kstest(p_values, "uniform").statistic < 0.1
    shifted = permutation_p_value(rng.normal(size=9) + 2, rng.normal(size=9), paired=paired, permutations=999)
    assert shifted < 0.05


def test_runs_group_by_overrides_without_the_seed_and_pair_by_seed(tmp_path):
    for seed, (fid_a, fid_b) in enumerate([(1.0, 1.5), (1.2, 1.6), (1.1, 1.8)]):
        make_run(tmp_path / "multi" / f"{seed}", ["model=unet", f"seed={seed}", "hydra.job.name=x"],
                 {"fid_classifier@64": fid_a, "fid_classifier@64_ci_low": 0.0, "only_here": 1.0})
        make_run(tmp_path / f"tiny_{seed}", [f"seed={seed}", "model=unet_tiny"], {"fid_classifier@64": fid_b})
    comparison = compare_runs([str(tmp_path / "multi"), str(tmp_path / "tiny_*")], level=0.9)
    assert set(comparison.groups) == {"model=unet", "model=unet_tiny"}
    assert comparison.metrics == ["fid_classifier@64"]  # the common one; intervals are not metrics
    unet = next(row for row in comparison.summary if row["group"] == "model=unet")
    assert unet["mean"] == pytest.approx(1.1) and unet["n"] == 3
    assert (unet["ci_low"], unet["ci_high"]) == pytest.approx(t_interval(np.array([1.0, 1.2, 1.1]), 0.9))
    (difference,) = comparison.differences
    assert difference["paired"] and difference["difference"] == pytest.approx(1.1 - 1.633333, abs=1e-5)
    assert difference["p_value"] == pytest.approx(0.25)  # all three pairs negative: 2 of 8 sign patterns


def test_cli_writes_markdown_csv_and_figure(tmp_path, capsys):
    for seed in range(2):
        make_run(tmp_path / "runs" / f"a{seed}", [f"seed={seed}", "loss=mse"], {"kid": 0.1 + seed, "fid": 1.0})
        make_run(tmp_path / "runs" / f"b{seed}", [f"seed={seed + 5}", "loss=l1"], {"kid": 0.3 + seed, "fid": 2.0})
    assert main([str(tmp_path / "runs" / "*"), "--out", str(tmp_path / "out"), "--metric", "kid"]) == 0
    assert "| loss=mse | loss=l1 | `kid` | -0.2 | 0.6667 | no |" in capsys.readouterr().out  # 4 of 6 splits
    for name in ("comparison.md", "comparison.csv", "comparison.png"):
        assert (tmp_path / "out" / name).is_file()
    rows = (tmp_path / "out" / "comparison.csv").read_text().splitlines()
    assert rows[0].startswith("kind,group") and len(rows) == 1 + 2 + 1


def test_errors_name_the_folder(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="empty has no metrics.json"):
        compare_runs([str(empty)])
    make_run(tmp_path / "one", [], {"fid": 1.0})
    make_run(tmp_path / "two", [], {"kid": 1.0})
    with pytest.raises(ConfigError, match=r"share no numeric metric.*one.*two"):
        compare_runs([str(tmp_path / "one"), str(tmp_path / "two")])
    with pytest.raises(ConfigError, match=r"'fid' is missing from metrics.json of \[.*two"):
        compare_runs([str(tmp_path / "one"), str(tmp_path / "two")], metrics=["fid"])
    with pytest.raises(ConfigError, match=r"nothing_here\* matches no run folder"):
        compare_runs([str(tmp_path / "nothing_here*")])
    assert main([str(empty)]) == 2 and "empty has no metrics.json" in capsys.readouterr().err
