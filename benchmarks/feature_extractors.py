"""Does the label-free extractor (``features=autoencoder``) tell good samples from bad ones? (issue 18, item 4)

For each data source (16x16 defaults) it trains a small diffusion model (``model=unet_tiny``) through the
project's pipeline, then computes FID on autoencoder features between the held-out split and
(a) samples of the trained model, (b) samples of the same architecture with its initial random weights
(same sampler, same seeds), (c) a Gaussian-blurred (sigma 1) copy of as many training images and
(d) as many unblurred training images: the real-vs-real floor. On labelled sources the classifier's FID
of the same image sets is shown beside it. Every set has the held-out split's size. Prints a markdown
table and writes it to ``--out``.

    python benchmarks/feature_extractors.py --out benchmarks/results/feature_extractors.md
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from torchvision.transforms.functional import gaussian_blur

from spectral_diffusion.cli import CONFIG_DIR
from spectral_diffusion.evaluation import build_extractor
from spectral_diffusion.metrics.quality import extract_features, feature_distances
from spectral_diffusion.pipeline import build, instantiate_checked

SOURCES = ["random_fields", "textures", "mnist"]
SETS = ["trained", "untrained", "blurred", "real"]


def compose_config(source: str, cache_dir: Path, output_dir: Path, extra: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", overrides=[f"data={source}", "model=unet_tiny", *extra])
    with open_dict(cfg):
        cfg.paths.root_dir = str(output_dir)
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.cache_dir = str(cache_dir)
    return cfg


def train_model(cfg, steps: int):
    """``pipeline.build`` and a Lightning Trainer on the CPU with the config's precision and clipping;
    no validation, logging or checkpoints (the benchmark only needs the EMA weights)."""
    L.seed_everything(int(cfg.seed), workers=True)
    components = build(cfg)
    module, datamodule = components.module, components.datamodule
    L.seed_everything(int(cfg.seed), workers=True)
    untrained = build(cfg).module  # the same seed: the initial weights the training started from
    trainer = L.Trainer(
        accelerator="cpu", devices=1, precision=cfg.trainer.precision, max_steps=steps, max_epochs=-1,
        gradient_clip_val=cfg.trainer.gradient_clip_val, limit_val_batches=0, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, callbacks=[], enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=cfg.paths.output_dir,
    )
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    return module, untrained, datamodule, time.perf_counter() - started


def image_sets(module, untrained, datamodule, seed: int) -> dict[str, torch.Tensor]:
    """Every compared set, with as many images as the held-out split."""
    count = len(datamodule.val_images)
    order = torch.randperm(len(datamodule.train_images), generator=torch.Generator().manual_seed(seed))
    real = datamodule.train_images.index_select(0, order[:count])
    return {
        "trained": module.generate(count, seed=seed),
        "untrained": untrained.generate(count, seed=seed),
        "blurred": gaussian_blur(real, kernel_size=5, sigma=1.0),
        "real": real,
    }


def fids(heldout: torch.Tensor, sets: dict[str, torch.Tensor], extractor) -> dict[str, float]:
    reference = extract_features(heldout, extractor)
    return {name: feature_distances(reference, extract_features(images, extractor))["fid"]
            for name, images in sets.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="markdown file for the table")
    parser.add_argument("--sources", nargs="+", default=SOURCES, help=f"data options (default: {SOURCES})")
    parser.add_argument("--steps", type=int, default=1000, help="training steps per source (batch 64)")
    parser.add_argument("--sampler-steps", type=int, default=50, help="DDIM steps of every sample set")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core CPU)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="extractor cache (default: a temporary folder, so the extractors' training is timed)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        cache_dir = args.cache_dir or Path(scratch) / "cache"
        for source in args.sources:
            extra = [f"sampler.steps={args.sampler_steps}", f"seed={args.seed}"]
            cfg = compose_config(source, cache_dir, Path(scratch) / source, extra)
            module, untrained, datamodule, train_seconds = train_model(cfg, args.steps)
            sets = image_sets(module, untrained, datamodule, args.seed)
            features = instantiate_checked(compose_config(source, cache_dir, Path(scratch), ["features=autoencoder"])
                                           .features)
            started = time.perf_counter()
            autoencoder = build_extractor(features, datamodule)
            extractor_seconds = time.perf_counter() - started
            row = {"source": source, "n": len(datamodule.val_images), "train_seconds": train_seconds,
                   "extractor_seconds": extractor_seconds, "autoencoder": fids(datamodule.val_images, sets, autoencoder)}
            if datamodule.train_labels is not None:
                classifier = build_extractor(instantiate_checked(cfg.features), datamodule)
                row["classifier"] = fids(datamodule.val_images, sets, classifier)
            rows.append(row)
            print(f"{source}: {row}", file=sys.stderr, flush=True)

    table = markdown(rows, args)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    return 0


def markdown(rows: list[dict], args) -> str:
    header = ("| data | held-out n | extractor | trained model | untrained model | blurred real (σ=1) "
              "| real vs real (floor) |\n|---|---:|---|---:|---:|---:|---:|\n")
    lines = []
    for row in rows:
        for extractor in ("autoencoder", "classifier"):
            if extractor in row:
                values = " | ".join(f"{row[extractor][name]:.2f}" for name in SETS)
                lines.append(f"| {row['source']} | {row['n']} | {extractor} | {values} |")
    timings = ", ".join(f"{row['source']}: model {row['train_seconds']:.0f} s, autoencoder "
                        f"{row['extractor_seconds']:.0f} s" for row in rows)
    settings = (f"\nFID against the held-out split, every set of held-out size. Models: `model=unet_tiny`, "
                f"{args.steps} steps of batch 64 (the data config's) with the default noise, loss and optimizer, "
                f"EMA weights, DDIM {args.sampler_steps} steps; the untrained model is the same network at its "
                f"initial weights with the same sampler and seeds. Blurred: Gaussian σ=1 (5x5) on as many "
                f"training images. Extractors with their `conf/features` defaults. CPU, {args.threads} thread(s); "
                f"training time {timings}.\n")
    return header + "\n".join(lines) + "\n" + settings


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
