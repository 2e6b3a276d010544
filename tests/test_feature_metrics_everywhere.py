"""Feature metrics on every data source: features=auto (the default) picks an extractor the data can train,
features=none skips the feature metrics with the reason and a fallback objective, small held-out splits warn."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from spectral_diffusion.evaluation import choose_features, metric_shorthands, resolve_objective
from spectral_diffusion.metrics.features import AutoFeatures, NoFeatures
from spectral_diffusion.pipeline import build, train
from spectral_diffusion.utils.validation import ConfigError

from .conftest import REPO_ROOT, cli_env, compose_train


def test_the_default_features_are_auto_and_follow_the_labels(tmp_path, cache_dir):
    for data, expected in (("digits", "classifier"), ("random_fields", "autoencoder")):
        cfg = compose_train(["debug=default", f"data={data}"], tmp_path, cache_dir)
        assert cfg.features._target_.endswith("AutoFeatures")
        datamodule = build(cfg).datamodule
        from hydra.utils import instantiate

        features = choose_features(instantiate(cfg.features), datamodule)
        assert isinstance(features, AutoFeatures)
        assert features.name == expected


def test_resolve_objective_without_features():
    shorthands = {"val_loss": "val_loss"}
    # a default feature metric falls back, saying so
    key, note = resolve_objective("fid", shorthands, ["spectral"], features_available=False, explicit=False,
                                  fallbacks=["val_loss", "spectral_mse"])
    assert key == "val_loss" and "features=none" in note
    key, note = resolve_objective("fid_classifier@1000", {}, ["spectral"], features_available=False, explicit=False,
                                  fallbacks=["spectral_mse"])
    assert key == "spectral_mse" and note
    # one the user named is refused, naming the key and the alternatives
    with pytest.raises(ConfigError, match=r"optimized_metric='kid'.*features=none.*val_loss"):
        resolve_objective("kid", shorthands, [], features_available=False, explicit=True, fallbacks=["val_loss"])
    with pytest.raises(ConfigError, match="optimized_metric='fid'"):
        resolve_objective("fid", {}, [], features_available=False, explicit=False, fallbacks=[])
    # other metrics resolve as before, with no note
    assert resolve_objective("val_loss", shorthands, [], features_available=False, explicit=True) == ("val_loss", None)
    assert resolve_objective("spectral_mse", {}, ["spectral"], features_available=False) == ("spectral_mse", None)
    # recognisability needs the classifier: a default one falls back to FID, one the user named is refused
    autoencoder = {"fid": "fid_autoencoder@64", "kid": "kid_autoencoder@64"}
    key, note = resolve_objective("recognisable", autoencoder, explicit=False)
    assert key == "fid_autoencoder@64" and "classifier extractor" in note and "autoencoder features" in note
    with pytest.raises(ConfigError, match=r"optimized_metric='recognisable' needs class labels.*\['fid', 'kid'\]"):
        resolve_objective("recognisable", autoencoder, explicit=True)
    classifier = metric_shorthands("classifier", 64)
    assert resolve_objective("recognisable", classifier, explicit=False) == ("recognisable_classifier@64", None)
    # without features a default recognisable falls back like a default fid
    key, note = resolve_objective("recognisable", shorthands, ["spectral"], features_available=False, explicit=False,
                                  fallbacks=["val_loss"])
    assert key == "val_loss" and "features=none" in note
    # with features, nothing changes
    assert resolve_objective("fid", {"fid": "fid_autoencoder@64", "kid": "kid_autoencoder@64"},
                             features_available=True) == ("fid_autoencoder@64", None)


@pytest.mark.slow
def test_sd_train_on_random_fields_reports_a_feature_fid(tmp_path, cache_dir):
    """The issue's first failure: data without labels used to stop before training."""
    cfg = compose_train(["debug=default", "data=random_fields", "data.source.num_images=256",
                         "data.source.image_size=8"], tmp_path, cache_dir)
    metrics = train(cfg)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # the default objective, recognisability, needs labels: it falls back to the FID of autoencoder features
    assert written["objective_name"] == "fid_autoencoder@64" and written["objective_direction"] == "minimize"
    assert any("the objective is 'fid_autoencoder@64'" in warning for warning in written["warnings"])
    assert written["fid_autoencoder@64"] == pytest.approx(metrics["fid_autoencoder@64"])
    assert written["fid_autoencoder@64"] > 0
    assert any(key.startswith("fid_floor_autoencoder@") for key in written)
    assert "features" not in written["skipped"]


@pytest.mark.slow
def test_features_none_finishes_with_the_reason_and_a_fallback_objective(tmp_path, cache_dir):
    cfg = compose_train(["debug=default", "features=none"], tmp_path, cache_dir)
    train(cfg)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert not [key for key in written if key.startswith(("fid", "kid", "precision", "recall"))]
    assert written["skipped"]["features"] == NoFeatures.reason
    assert written["objective_name"] == "val_loss" and written["objective"] == written["val_loss"]
    warnings = written["warnings"]
    assert any("the objective is 'val_loss'" in warning for warning in warnings)
    # the debug data (scikit-learn digits) holds out 180 images: below the size at which FID means much
    assert any("held-out split has 180 images" in warning for warning in warnings)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Warnings" in report and "features=none" in report


@pytest.mark.slow
def test_a_feature_objective_named_on_the_command_line_is_refused_before_training(tmp_path, cache_dir):
    command = [sys.executable, "-m", "spectral_diffusion.cli.train", "debug=default", "features=none",
               "optimized_metric=fid", f"hydra.run.dir={tmp_path / 'run'}", f"paths.summary_csv={tmp_path / 's.csv'}"]
    result = subprocess.run(command, cwd=REPO_ROOT, env=cli_env(cache_dir), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0
    assert "optimized_metric='fid' is a feature metric" in result.stderr + result.stdout
    assert not (tmp_path / "run" / "checkpoints").exists()
