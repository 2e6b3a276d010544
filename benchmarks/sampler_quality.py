"""FID against network evaluations for every sampler: which sampler gives the best images per second?

For each checkpoint (the default MNIST model and, optionally, one trained with ``noise=equalized``), each
sampler and each step count, draws ``--num-samples`` images with fixed seeds through ``module.generate``,
times them, records the sampler's NFE and computes FID on the run's classifier features against the held-out
images (same N for every cell). Writes results.csv (resumable: finished cells are skipped), results.md and
fid_vs_nfe.png into ``--out``.

    python benchmarks/sampler_quality.py --ckpt outputs/.../checkpoints/last.ckpt \
        --ckpt-equalized outputs/.../checkpoints/last.ckpt --out benchmarks/results/sampler_quality
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from results_csv import append_result, read_results

from spectral_diffusion.cli import CONFIG_DIR
from spectral_diffusion.diffusion.guidance import instantiate_sampler
from spectral_diffusion.diffusion.samplers import validate_sampler
from spectral_diffusion.evaluation import build_extractor
from spectral_diffusion.metrics.quality import sample_quality
from spectral_diffusion.pipeline import instantiate_checked, load_module
from spectral_diffusion.utils.validation import ConfigError

SAMPLERS = ["ddpm", "ddim", "dpm_solver_pp", "euler", "heun", "deq"]
STEPS = [10, 20, 50, 100, 1000]
COLUMNS = ["model", "sampler", "steps", "status", "nfe", "seconds", "seconds_per_image", "fid", "kid",
           "iterations", "residual", "num_samples", "extractor", "checkpoint", "reason"]


def find_checkpoint(root: Path, noise: str) -> Path | None:
    """The newest ``sd-train`` run under ``root`` on MNIST with this ``noise`` (read from .hydra/config.yaml)."""
    found = []
    for ckpt in root.glob("**/checkpoints/last.ckpt"):
        config_path = ckpt.parent.parent / ".hydra" / "config.yaml"
        if not config_path.is_file():
            continue
        config = OmegaConf.load(config_path)
        data_target = str(OmegaConf.select(config, "data._target_", default="") or "")
        data_name = str(OmegaConf.select(config, "data.name", default="") or "")
        noise_target = str(OmegaConf.select(config, "noise._target_", default="") or "")
        if "mnist" in (data_target + data_name).lower() and noise.lower() in noise_target.lower():
            found.append(ckpt)
    return max(found, key=lambda path: path.stat().st_mtime) if found else None


def sampler_for(name: str, steps: int, process):
    """The configured sampler ``conf/sampler/<name>.yaml`` with ``steps``, validated for ``process``."""
    node = OmegaConf.load(CONFIG_DIR / "sampler" / f"{name}.yaml")
    node.steps = steps
    sampler = instantiate_sampler(node)
    validate_sampler(sampler, process)
    return sampler


def evaluation_setup(module, device):
    """The run's datamodule and classifier feature extractor (cached), built as ``sd-train``/``sd-eval`` build them."""
    config = OmegaConf.create(module.config)
    datamodule = instantiate_checked(config.data)
    datamodule.setup()
    return datamodule, build_extractor(instantiate_checked(config.features), datamodule, device)


def run_cell(module, extractor, real, sampler_name, steps, args, device) -> dict:
    sampler = sampler_for(sampler_name, steps, module.process)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    samples = module.generate(args.num_samples, sampler=sampler, seed=args.seed, batch_size=args.batch_size)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    info = module.last_sampling_info
    quality = sample_quality(real, samples, extractor, batch_size=args.batch_size)
    fid_key = next(key for key in quality if key.startswith("fid_"))
    kid_key = next(key for key in quality if key.startswith("kid_") and not key.startswith("kid_std"))
    return {"status": "ok", "nfe": info.get("nfe"), "seconds": seconds, "seconds_per_image": seconds / len(samples),
            "fid": quality[fid_key], "kid": quality[kid_key], "iterations": info.get("iterations", ""),
            "residual": info.get("residual", ""), "extractor": fid_key}


def write_table(rows: list[dict], path: Path) -> None:
    lines = ["| model | sampler | steps | NFE | FID | KID | s/image | note |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        if row["status"] == "ok":
            fid, kid, per_image = float(row["fid"]), float(row["kid"]), float(row["seconds_per_image"])
            extra = f"{int(row['iterations'])} iterations" if row.get("iterations") not in ("", None) else ""
            lines.append(f"| {row['model']} | {row['sampler']} | {row['steps']} | {float(row['nfe']):g} | {fid:.2f} "
                         f"| {kid:.4f} | {per_image:.4f} | {extra} |")
        else:
            lines.append(f"| {row['model']} | {row['sampler']} | {row['steps']} | – | – | – | – | {row['reason']} |")
    extractors = sorted({row["extractor"] for row in rows if row.get("extractor")})
    lines.append("")
    lines.append(f"FID/KID keys: {', '.join(extractors)} (classifier features, the same N for every cell).")
    path.write_text("\n".join(lines) + "\n")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    models = sorted({row["model"] for row in rows})
    styles = {model: ["-", "--", ":", "-."][index % 4] for index, model in enumerate(models)}
    for (model, sampler) in sorted({(row["model"], row["sampler"]) for row in rows}):
        points = sorted((float(row["nfe"]), float(row["fid"])) for row in rows
                        if row["model"] == model and row["sampler"] == sampler and row["status"] == "ok")
        if points:
            nfe, fid = zip(*points, strict=True)
            axis.plot(nfe, fid, styles[model], marker="o", label=f"{sampler} ({model})")
    axis.set_xscale("log")
    axis.set_xlabel("network evaluations per sample (NFE)")
    axis.set_ylabel("FID (classifier features)")
    axis.legend(fontsize=7, ncol=2)
    figure.savefig(path, dpi=150)
    plt.close(figure)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, default=None,
                        help="default: the newest outputs/**/checkpoints/last.ckpt of an MNIST run with noise=gaussian")
    parser.add_argument("--ckpt-equalized", type=Path, default=None,
                        help="a model trained with noise=equalized (default: the newest such MNIST run, if any)")
    parser.add_argument("--outputs", type=Path, default=Path("outputs"), help="where the default checkpoints are found")
    parser.add_argument("--samplers", nargs="+", default=SAMPLERS)
    parser.add_argument("--steps", nargs="+", type=int, default=STEPS)
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--deq-max-steps", type=int, default=100, help="skip deq above this many steps (cost ∝ steps²)")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sampler_quality"))
    args = parser.parse_args(argv)
    if args.num_samples < 2:
        raise ConfigError(f"--num-samples={args.num_samples} is invalid; FID needs at least 2 samples")

    models = {"gaussian": args.ckpt or find_checkpoint(args.outputs, "GaussianProcess")}
    if models["gaussian"] is None:
        raise ConfigError(f"no MNIST noise=gaussian run found under {args.outputs}; pass --ckpt")
    equalized = args.ckpt_equalized or find_checkpoint(args.outputs, "EqualizedProcess")
    if equalized is not None:
        models["equalized"] = equalized
    else:
        print("no noise=equalized checkpoint given or found: benchmarking the gaussian model only", file=sys.stderr)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))

    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.csv"
    done = {(row["model"], row["sampler"], row["steps"]) for row in read_results(results_path)}
    cells = [(model, sampler, steps) for model in models for sampler in args.samplers for steps in args.steps]
    from tqdm.auto import tqdm

    loaded = {}
    for model, sampler_name, steps in tqdm(cells, desc="sampler cells", file=sys.stderr):
        if (model, sampler_name, str(steps)) in done:
            continue
        row = {"model": model, "sampler": sampler_name, "steps": steps, "num_samples": args.num_samples,
               "checkpoint": str(models[model])}
        if sampler_name == "deq" and steps > args.deq_max_steps:
            row.update(status="skipped", reason=f"deq costs up to steps·(steps + 1)/2 NFE; steps > --deq-max-steps="
                                                f"{args.deq_max_steps}")
        else:
            if model not in loaded:
                module = load_module(models[model]).to(device)
                datamodule, extractor = evaluation_setup(module, device)
                loaded = {model: (module, extractor, datamodule.val_images)}  # one model in memory at a time
            try:
                row.update(run_cell(*loaded[model], sampler_name, steps, args, device))
            except ConfigError as error:  # e.g. more steps than a discrete schedule has
                row.update(status="skipped", reason=str(error))
        append_result(results_path, row, COLUMNS)
        if row["status"] == "skipped":
            print(f"skipped {model}/{sampler_name}/{steps}: {row['reason']}", file=sys.stderr)

    rows = read_results(results_path)
    write_table(rows, args.out / "results.md")
    if any(row["status"] == "ok" and not math.isnan(float(row["fid"])) for row in rows):
        plot(rows, args.out / "fid_vs_nfe.png")
    return args.out


if __name__ == "__main__":
    main()
