"""Sparse MNIST reconstruction (issue 14, item 6): held-out digits rebuilt from 10 / 20 / 50 % observed pixels by the
neural field (``model=nf_latent data=mnist_field``) and by scipy's griddata interpolation (nearest, linear, cubic).

Every method sees the same held-out digits and the same observation masks (``data=mnist_field``: ``--num-images``
digits drawn from the image runs' held-out split; random pixels, or with ``--mask patches`` random square patches,
drawn from ``data.seed``) and is scored on the 28×28 grid: PSNR (data range 2, reconstructions clipped to [−1, 1])
and SSIM (scikit-image, 7×7 window) per digit, reported as the mean and a 95 % Student t interval over digits. The
neural field is also decoded on the 112×112 pixel-centre grid and block-averaged back to 28×28 ("112 → 28"), which
asks whether the finer decoding is consistent with the field on the original pixels.

The neural field is one model, trained once through ``sd-train``'s pipeline (``experiment=nf_mnist``) at
``--train-fraction`` observed pixels for ``--steps`` steps (default: the config's ``trainer.max_steps``), or loaded
from ``--ckpt``, and then asked to reconstruct at every fraction. With ``--generate N`` it also samples N
unconditional latents (the model's sampler, seed 0), decodes them at 28, 56 and 112, and scores the 28×28 digits by
FID and KID with the project's classifier features against the image runs' held-out digits, next to the real floor
(N training digits against the held-out ones). Writes ``<out>/table.md``, ``<out>/results.json``,
``<out>/sparse_mnist.png`` (truth, observed pixels, each method, the neural field decoded at 28, 56 and 112) and
with ``--generate`` ``<out>/generated.png``.

    python benchmarks/sparse_mnist.py --generate 500 --out docs/sparse_mnist
    python benchmarks/sparse_mnist.py --ckpt outputs/.../checkpoints/last.ckpt --out docs/sparse_mnist
    python benchmarks/sparse_mnist.py --baselines-only
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from matplotlib.figure import Figure
from omegaconf import open_dict

from spectral_diffusion.cli import CONFIG_DIR
from spectral_diffusion.evaluation.compare import t_interval
from spectral_diffusion.evaluation.evaluate import build_extractor, choose_features
from spectral_diffusion.metrics.quality import FeaturePair, distance_metrics, floor_features
from spectral_diffusion.neural_field.baselines import INTERPOLATION_METHODS, interpolate_batch
from spectral_diffusion.neural_field.field2d import MnistField, field_images, pool_to, psnr, ssim
from spectral_diffusion.pipeline import instantiate_checked

FRACTIONS = (0.1, 0.2, 0.5)
FIGURE_RESOLUTIONS = (28, 56, 112)
# The finer grid the neural field is decoded on and pooled back to 28×28 for the "112 → 28" rows.
FINE_RESOLUTION = 112
LEVEL = 0.95

# (fields, resolution) -> values (B, resolution², 1) reconstructed from each field's observed pixels
Reconstructor = Callable[[dict, int], torch.Tensor]


def compose_config(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose(config_name="train", overrides=["data=mnist_field", *overrides])


def held_out(fraction: float, num_images: int, mask: str = "pixels", patch_size: int = 4) -> MnistField:
    """The data config's held-out digits with ``mask`` observations at ``fraction`` (same digits and mask seed at
    every fraction)."""
    cfg = compose_config([f"data.observed_fraction={fraction}", f"data.num_val={num_images}", f"data.mask={mask}",
                          f"data.patch_size={patch_size}"])
    return instantiate_checked(cfg.data)


def baseline(method: str, data: MnistField) -> Reconstructor:
    return lambda fields, resolution: interpolate_batch(fields, data.grid(resolution), method)


def neural_field(module, data: MnistField) -> Reconstructor:
    """Encode each field's observed pixels, decode on ``data``'s pixel-centre grid (EMA weights)."""
    def reconstruct(fields: dict, resolution: int) -> torch.Tensor:
        coords = data.grid(resolution)
        parts = []
        for start in range(0, len(fields["values"]), 100):
            rows = {key: value[start:start + 100] for key, value in fields.items()}
            parts.append(module.decode(module.encode(rows), coords).cpu().float())
        return torch.cat(parts)
    return reconstruct


def as_images(values: torch.Tensor, resolution: int) -> torch.Tensor:
    return values[..., 0].reshape(-1, resolution, resolution)


def score(reconstructed: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Mean and 95 % t interval over digits of PSNR and SSIM of (B, 28, 28) reconstructions."""
    row = {}
    for name, values in (("psnr", psnr(reconstructed, truth)), ("ssim", ssim(reconstructed, truth))):
        values = values.numpy()
        low, high = t_interval(values, LEVEL)
        row.update({name: float(values.mean()), f"{name}_low": low, f"{name}_high": high})
    return row


def train_neural_field(steps: int | None, fraction: float, out: Path, overrides: list[str]):
    """Train ``experiment=nf_mnist`` (``model=nf_latent data=mnist_field``) through ``sd-train``'s pipeline, which
    also writes its own metrics.json and report.md into the run folder; returns (module, seconds, run folder)."""
    from spectral_diffusion.pipeline import train

    steps_override = [] if steps is None else [f"trainer.max_steps={steps}"]
    cfg = compose_config(["experiment=nf_mnist", f"data.observed_fraction={fraction}", *steps_override, *overrides])
    run_dir = out / "nf_run"
    with open_dict(cfg):
        cfg.paths.root_dir = str(out)
        cfg.paths.output_dir = str(run_dir)
        cfg.paths.summary_csv = str(out / "summary.csv")
        cfg.trainer.enable_progress_bar = False
    start = time.perf_counter()
    train(cfg)
    seconds = time.perf_counter() - start
    return load_neural_field(run_dir / "checkpoints" / "last.ckpt"), seconds, run_dir


def load_neural_field(ckpt: Path):
    from spectral_diffusion.pipeline import load_module

    module = load_module(ckpt)
    module.eval()
    return module


def evaluate(methods: dict[str, Reconstructor], fine: set[str], fraction: float, data: MnistField
             ) -> tuple[list[dict], dict[str, dict[int, torch.Tensor]]]:
    """Rows of the table at one fraction, and each method's reconstructions by resolution (for the figure)."""
    fields = data.val_fields
    truth = as_images(fields["values"], 28)
    rows, images = [], {}
    for name, reconstruct in methods.items():
        start = time.perf_counter()
        at_28 = as_images(reconstruct(fields, 28), 28)
        seconds = time.perf_counter() - start
        images[name] = {28: at_28}
        rows.append({"fraction": fraction, "method": name, "grid": "28", **score(at_28, truth),
                     "seconds_per_image": seconds / len(truth)})
        if name in fine:
            resolutions = sorted({*FIGURE_RESOLUTIONS, FINE_RESOLUTION} - {28})
            for resolution in resolutions:
                images[name][resolution] = as_images(reconstruct(fields, resolution), resolution)
            pooled = pool_to(images[name][FINE_RESOLUTION], 28)
            rows.append({"fraction": fraction, "method": name, "grid": f"{FINE_RESOLUTION} → 28",
                         **score(pooled, truth), "seconds_per_image": math.nan})
    return rows, images


def generation(module, data: MnistField, count: int, out: Path) -> dict[str, float]:
    """Unconditional samples decoded at every figure resolution; FID/KID of the 28×28 ones with the classifier
    features against the held-out digits, and the real floor at the same count. Saves ``generated.png``."""
    start = time.perf_counter()
    latents = module.sample_latents(count, seed=0)
    seconds = time.perf_counter() - start
    samples = {resolution: field_images(module.decode(latents, data.grid(resolution)).cpu().float().clamp(-1, 1),
                                        resolution) for resolution in FIGURE_RESOLUTIONS}
    images = data.images
    features = choose_features(instantiate_checked(compose_config([]).features), images)
    extractor = build_extractor(features, images)
    pair = FeaturePair.extract(images.val_images, samples[28], extractor)
    metrics = {"sampling_seconds": seconds, **distance_metrics(pair)}
    floor = floor_features(images.train_images, images.val_images, extractor, count, heldout_features=pair.real)
    metrics.update(distance_metrics(floor, prefix="floor"))
    columns = 8
    fig = Figure(figsize=(1.2 * columns, 1.25 * len(FIGURE_RESOLUTIONS)))
    axes = fig.subplots(len(FIGURE_RESOLUTIONS), columns, squeeze=False)
    for r, resolution in enumerate(FIGURE_RESOLUTIONS):
        for c in range(columns):
            axes[r, c].imshow(samples[resolution][c, 0].numpy(), cmap="gray", vmin=-1, vmax=1,
                              interpolation="nearest")
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(f"{resolution}×{resolution}", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "generated.png", dpi=120)
    return metrics


def markdown_table(rows: list[dict]) -> str:
    lines = ["| observed | method | grid | PSNR dB (95 % CI) | SSIM (95 % CI) |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['fraction']:.0%} | {row['method']} | {row['grid']} | "
                     f"{row['psnr']:.2f} [{row['psnr_low']:.2f}, {row['psnr_high']:.2f}] | "
                     f"{row['ssim']:.3f} [{row['ssim_low']:.3f}, {row['ssim_high']:.3f}] |")
    return "\n".join(lines) + "\n"


def figure(panels: list[tuple[float, torch.Tensor, torch.Tensor, dict]], path: Path, examples: int) -> None:
    """Per fraction, ``examples`` digits: truth, observed pixels (hidden ones grey), each method at 28 and the
    neural field at 56 and 112."""
    columns = ["truth", "observed"]
    for _, _, _, images in panels[:1]:
        for name, by_resolution in images.items():
            columns += [f"{name}" if resolution == 28 else f"{name} @{resolution}" for resolution in by_resolution
                        if resolution == 28 or resolution in FIGURE_RESOLUTIONS]
    rows = len(panels) * examples
    fig = Figure(figsize=(1.2 * len(columns), 1.25 * rows))
    axes = fig.subplots(rows, len(columns), squeeze=False)
    for block, (fraction, truth, mask, images) in enumerate(panels):
        for k in range(examples):
            r = block * examples + k
            observed = np.ma.masked_array(truth[k].numpy(), mask=~mask[k].reshape(28, 28).numpy())
            tiles = [truth[k], observed]
            for name, by_resolution in images.items():
                tiles += [by_resolution[resolution][k] for resolution in by_resolution
                          if resolution == 28 or resolution in FIGURE_RESOLUTIONS]
            for c, tile in enumerate(tiles):
                axis = axes[r, c]
                axis.set_facecolor("0.55")
                axis.imshow(tile if isinstance(tile, np.ma.MaskedArray) else tile.clamp(-1, 1).numpy(),
                            cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
                axis.set_xticks([])
                axis.set_yticks([])
                if r == 0:
                    axis.set_title(columns[c], fontsize=7)
            axes[r, 0].set_ylabel(f"{fraction:.0%}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    parser.add_argument("--num-images", type=int, default=200, help="held-out digits scored (first of the split)")
    parser.add_argument("--ckpt", type=Path, help="a trained model=nf_latent data=mnist_field checkpoint")
    parser.add_argument("--steps", type=int, help="training steps when no --ckpt is given (default: trainer.max_steps "
                        "of experiment=nf_mnist)")
    parser.add_argument("--train-fraction", type=float, default=0.2, help="observed fraction the model trains on")
    parser.add_argument("--mask", default="pixels", help="observations scored: pixels | patches (data.mask)")
    parser.add_argument("--patch-size", type=int, default=4, help="side of the square patches (data.patch_size)")
    parser.add_argument("--baselines-only", action="store_true", help="skip the neural field")
    parser.add_argument("--examples", type=int, default=3, help="digits per fraction in the figure")
    parser.add_argument("--generate", type=int, default=0, help="unconditional samples scored by FID (0: none)")
    parser.add_argument("--out", type=Path, default=Path("docs/sparse_mnist"))
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for training, e.g. model.decoder_hidden=64")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    module, training = None, {}
    if args.ckpt is not None:
        module = load_neural_field(args.ckpt)
        training = {"ckpt": str(args.ckpt)}
    elif not args.baselines_only:
        module, seconds, run_dir = train_neural_field(args.steps, args.train_fraction, args.out, args.overrides)
        run = json.loads((run_dir / "metrics.json").read_text())
        training = {"steps": run["global_step"], "train_fraction": args.train_fraction,
                    "fit_seconds": run["train_seconds"], "run_seconds": seconds, "run_dir": str(run_dir),
                    "overrides": args.overrides}
        print(f"trained experiment=nf_mnist: {run['global_step']} steps, fit {run['train_seconds']:.0f} s, whole run "
              f"(with its evaluation) {seconds:.0f} s")

    rows, panels = [], []
    for fraction in args.fractions:
        data = held_out(fraction, args.num_images, args.mask, args.patch_size)
        methods = {method: baseline(method, data) for method in INTERPOLATION_METHODS}
        if module is not None:
            methods["neural field"] = neural_field(module, data)
        fraction_rows, images = evaluate(methods, {"neural field"}, fraction, data)
        rows += fraction_rows
        fields = data.val_fields
        panels.append((fraction, as_images(fields["values"], 28), fields["mask"], images))
        print(markdown_table(fraction_rows), end="", flush=True)

    generated = {}
    if module is not None and args.generate:
        generated = generation(module, data, args.generate, args.out)
        print("generation:", json.dumps(generated, indent=1))
    table = markdown_table(rows)
    (args.out / "table.md").write_text(table)
    (args.out / "results.json").write_text(json.dumps({"rows": rows, "training": training, "generation": generated,
                                                       "num_images": args.num_images, "mask": args.mask,
                                                       "patch_size": args.patch_size}, indent=2))
    figure(panels, args.out / "sparse_mnist.png", args.examples)
    print(table)
    print(f"wrote {args.out}/table.md, results.json, sparse_mnist.png")
    return args.out


if __name__ == "__main__":
    main()
