"""Classifier-free guidance on the default MNIST model (issue 14 item 5): FID and class accuracy against the scale.

Trains the default ``sd-train`` configuration (16x16 MNIST, ``model=unet``, v-prediction, cosine schedule, DDIM 50
steps) class-conditionally (``data.conditional=true``, ``model.condition_dropout=0.1``) for ``--steps`` optimizer
steps through sd-train's pipeline, or takes a trained conditional checkpoint with ``--ckpt``. Then for every
``--scales`` value it draws ``--num-samples`` images with classes cycling 0..9 (the same seeds at every scale) and
evaluates them as sd-train does (``evaluation.evaluate_images``: classifier features, ``evaluation.bootstrap``
intervals): FID with its interval, ``class_accuracy`` (the classifier names the requested class) with its interval
and recognisability. Prints a markdown table, writes ``<out>/guidance.json``, ``<out>/guidance.md`` and
``<out>/guidance.png``.

    python benchmarks/guidance.py --steps 2000 --out docs/guidance
    python benchmarks/guidance.py --ckpt outputs/.../checkpoints/last.ckpt --scales 0 1 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from matplotlib.figure import Figure
from omegaconf import OmegaConf, open_dict

from spectral_diffusion.cli import CONFIG_DIR
from spectral_diffusion.diffusion.guidance import instantiate_sampler
from spectral_diffusion.evaluation import EvaluationConfig, build_extractor, choose_features, evaluate_images
from spectral_diffusion.pipeline import instantiate_checked, load_module, train, requested_labels
from spectral_diffusion.utils.summary import git_commit


def train_conditional(steps: int, out: Path, seed: int) -> tuple[Path, dict]:
    """The default run, class-conditional, for ``steps`` steps; returns its last.ckpt and metrics. Its own
    end-of-run evaluation is cut to 200 samples without the battery: the scale sweep below measures properly."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", overrides=[
            "data.conditional=true", f"trainer.max_steps={steps}", f"seed={seed}", "evaluation.battery=false",
            "evaluation.num_samples=200"])
    with open_dict(cfg):
        cfg.paths.root_dir = str(out)
        cfg.paths.output_dir = str(out / "train")
        cfg.paths.summary_csv = None
    metrics = train(cfg)
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", metrics


def table(rows: list[dict], fid_key: str) -> str:
    lines = [f"| guidance scale | {fid_key} [95% CI] | class accuracy [95% CI] | recognisable | sampling s |",
             "|---:|---|---|---:|---:|"]
    for row in rows:
        m = row["metrics"]
        recognisable = next(v for k, v in m.items() if k.startswith("recognisable_classifier@") and "_ci" not in k)
        lines.append(f"| {row['scale']:g} | {m[fid_key]:.2f} [{m[fid_key + '_ci_low']:.2f}, {m[fid_key + '_ci_high']:.2f}]"
                     f" | {m['class_accuracy']:.3f} [{m['class_accuracy_ci_low']:.3f}, {m['class_accuracy_ci_high']:.3f}]"
                     f" | {recognisable:.3f} | {row['seconds']:.0f} |")
    return "\n".join(lines)


def plot(rows: list[dict], fid_key: str, floor: float, path: Path) -> None:
    figure = Figure(figsize=(6.5, 3.6))
    fid_axis = figure.subplots()
    scales = [row["scale"] for row in rows]
    fid = [row["metrics"][fid_key] for row in rows]
    errors = [[f - row["metrics"][fid_key + "_ci_low"] for f, row in zip(fid, rows)],
              [row["metrics"][fid_key + "_ci_high"] - f for f, row in zip(fid, rows)]]
    fid_axis.errorbar(scales, fid, yerr=errors, marker="o", color="tab:blue", capsize=3, label="FID")
    fid_axis.axhline(floor, color="tab:blue", linestyle=":", label="FID floor (real vs real)")
    fid_axis.set_xlabel("guidance scale w (0: unconditional, 1: conditional)")
    fid_axis.set_ylabel(f"FID ({fid_key})", color="tab:blue")
    accuracy_axis = fid_axis.twinx()
    accuracy = [row["metrics"]["class_accuracy"] for row in rows]
    accuracy_errors = [[a - row["metrics"]["class_accuracy_ci_low"] for a, row in zip(accuracy, rows)],
                       [row["metrics"]["class_accuracy_ci_high"] - a for a, row in zip(accuracy, rows)]]
    accuracy_axis.errorbar(scales, accuracy, yerr=accuracy_errors, marker="s", color="tab:red", capsize=3)
    accuracy_axis.set_ylabel("class accuracy", color="tab:red")
    fid_axis.legend(loc="center right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, help="a conditional checkpoint (default: train one)")
    parser.add_argument("--steps", type=int, default=2000, help="training steps when no --ckpt is given")
    parser.add_argument("--scales", type=float, nargs="+", default=[0, 1, 1.5, 2, 3, 5])
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--sampler-steps", type=int, default=25,
                        help="DDIM steps of the sweep (the run's own sampler, steps overridden; default run: 50)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples behind each interval")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/guidance"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    training = None
    ckpt = args.ckpt
    if ckpt is None:
        ckpt, metrics = train_conditional(args.steps, args.out, args.seed)
        training = {"steps": metrics["global_step"], "train_seconds": metrics["train_seconds"],
                    "class_accuracy_at_scale_1": metrics.get("class_accuracy")}
    module = load_module(ckpt)
    if module.num_classes is None:
        raise SystemExit(f"--ckpt {ckpt} is an unconditional model; train with data.conditional=true")
    cfg = OmegaConf.create(module.config)
    datamodule = instantiate_checked(cfg.data)
    datamodule.setup()
    features = choose_features(instantiate_checked(cfg.features), datamodule)
    extractor = build_extractor(features, datamodule)
    evaluation = EvaluationConfig.from_config({**OmegaConf.to_container(cfg.evaluation), "num_samples": args.num_samples,
                                               "battery": False, "timestep_bins": 0, "bootstrap": args.bootstrap})
    rows = []
    for scale in args.scales:
        sampler_node = OmegaConf.create(cfg.sampler)
        sampler_node.guidance_scale = scale
        sampler_node.steps = args.sampler_steps
        sampler = instantiate_sampler(sampler_node, instantiate_checked)
        began = time.perf_counter()
        samples = module.generate(args.num_samples, sampler=sampler, seed=evaluation.seed,
                                  batch_size=evaluation.batch_size)
        seconds = time.perf_counter() - began
        metrics = evaluate_images(samples, datamodule, extractor, evaluation, args.out / f"scale_{scale:g}",
                                  class_labels=requested_labels(module))
        rows.append({"scale": scale, "seconds": seconds, "metrics": {k: v for k, v in metrics.items()
                                                                     if isinstance(v, (int, float))}})
        print(f"scale {scale:g}: {metrics['class_accuracy']:.3f} class accuracy", flush=True)

    fid_key = next(k for k in rows[0]["metrics"] if k.startswith("fid_classifier@"))
    floor_key = next(k for k in rows[0]["metrics"] if k.startswith("fid_floor_classifier@") and "_ci" not in k)
    markdown = table(rows, fid_key)
    header = (f"checkpoint {ckpt}; {args.num_samples} samples per scale (classes cycling), sampler "
              f"{cfg.sampler._target_.rsplit('.', 1)[-1]} {args.sampler_steps} steps; {floor_key} = "
              f"{rows[0]['metrics'][floor_key]:.2f}; classifier held-out accuracy "
              f"{rows[0]['metrics'].get('classifier_accuracy', float('nan')):.3f}")
    if training is not None:
        header += f"; trained {training['steps']} steps in {training['train_seconds'] / 60:.1f} min"
    total_minutes = (time.perf_counter() - started) / 60
    print(header)
    print(markdown)
    (args.out / "guidance.md").write_text(header + "\n\n" + markdown + "\n")
    (args.out / "guidance.json").write_text(json.dumps({
        "checkpoint": str(ckpt), "training": training, "num_samples": args.num_samples, "git_commit": git_commit(),
        "total_minutes": total_minutes, "rows": rows}, indent=2) + "\n")
    plot(rows, fid_key, rows[0]["metrics"][floor_key], args.out / "guidance.png")
    print(f"total {total_minutes:.1f} min; wrote {args.out}/guidance.md, guidance.json, guidance.png")


if __name__ == "__main__":
    main()
