"""What the model groups of the battery (equivariance, straightness) add to the default evaluation: the default
config's sampling and ``evaluate_images`` with the image groups, then each model group alone, timed in one process.

    python benchmarks/evaluation_cost.py [--ckpt <run>/checkpoints/last.ckpt] [overrides ...]

Without ``--ckpt`` the default config's untrained model is timed (the same shapes and network cost).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from spectral_diffusion.cli import CONFIG_DIR
from spectral_diffusion.evaluation import (
    EvaluationConfig,
    build_extractor,
    choose_features,
    evaluate_images,
    timed_generate,
)
from spectral_diffusion.evaluation.evaluate import MODEL_GROUP_FUNCTIONS
from spectral_diffusion.pipeline import build, instantiate_checked, load_module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp())
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", overrides=args.overrides)
    with open_dict(cfg):
        cfg.paths.root_dir = cfg.paths.output_dir = str(out)
    components = build(cfg)
    module = load_module(args.ckpt) if args.ckpt else components.module
    datamodule = components.datamodule
    evaluation = EvaluationConfig.from_config(cfg.evaluation)
    evaluation.battery_options.groups = [g for g in evaluation.battery_options.groups if g not in MODEL_GROUP_FUNCTIONS]
    extractor = build_extractor(choose_features(instantiate_checked(cfg.features), datamodule), datamodule)
    started = time.perf_counter()
    samples, _ = timed_generate(module, evaluation.num_samples, seed=evaluation.seed, batch_size=evaluation.batch_size)
    sampled = time.perf_counter()
    evaluate_images(samples, datamodule, extractor, evaluation, out / "eval", module=module)
    evaluated = time.perf_counter()
    base = evaluated - started
    print(f"sampling {sampled - started:.1f} s + evaluation without the model groups {evaluated - sampled:.1f} s")
    for group, function in MODEL_GROUP_FUNCTIONS.items():
        began = time.perf_counter()
        function(module, datamodule.val_images, evaluation)
        seconds = time.perf_counter() - began
        print(f"{group}: {seconds:.1f} s = {100 * seconds / base:.1f} % of sampling + evaluation")


if __name__ == "__main__":
    main()
