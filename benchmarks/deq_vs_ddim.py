"""``sampler=deq`` against sequential DDIM (η = 0) on one checkpoint: sweeps used, network evaluations, the largest
pixel difference from DDIM's samples, and wall-clock ratios, with the network calls batched (``sampler.batch_size``
rows per call).

    python benchmarks/deq_vs_ddim.py --ckpt <run>/checkpoints/last.ckpt --steps 20 50 --tolerances 1e-3 1e-4 0

Tolerance 0 runs every sweep (the exact Jacobi bound: as many sweeps as steps). Prints one row per (steps,
tolerance): deq seconds / DDIM seconds measured in the same process, alternating the two ``--repeats`` times.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch

from spectral_diffusion.diffusion.samplers import ddim, deq
from spectral_diffusion.pipeline import load_module
from spectral_diffusion.utils.random import sample_generators

# Tolerance 0 is refused by the sampler; this is below any relative change float32 can resolve.
EXACT = 1e-30


def timed(function) -> tuple[torch.Tensor, float]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="an sd-train checkpoint (last.ckpt)")
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--tolerances", type=float, nargs="+", default=[1e-3, 1e-4, 0.0])
    parser.add_argument("--samples", type=int, default=64, help="trajectories solved together (one batch)")
    parser.add_argument("--batch-size", type=int, default=512, help="deq: rows per network call")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    module = load_module(args.ckpt).to(args.device).eval()
    denoise = module.self_conditioned_denoiser(use_ema=True)
    x_T = module.process.prior((args.samples, *module.image_shape), sample_generators(0, 0, args.samples),
                               device=module.device)
    print(f"device {args.device}, {args.samples} samples of {tuple(module.image_shape)}, deq batch_size "
          f"{args.batch_size}, {args.repeats} repeats (best time of each)")
    print("| steps | tolerance | sweeps | NFE deq / DDIM | max \\|deq − ddim\\| | deq s | DDIM s | time ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for steps in args.steps:
        for tolerance in args.tolerances:
            ddim_times, deq_times, info = [], [], {}
            for _ in range(args.repeats):
                reference, seconds = timed(partial(ddim, denoise, module.process, x_T, steps))
                ddim_times.append(seconds)
                sample, seconds = timed(partial(deq, denoise, module.process, x_T, steps, info=info,
                                                tolerance=tolerance or EXACT, batch_size=args.batch_size))
                deq_times.append(seconds)
            error = float((sample.clamp(-1, 1) - reference.clamp(-1, 1)).abs().max())
            print(f"| {steps} | {tolerance:g} | {info['iterations']} | {info['nfe']} / {steps} | {error:.2e} | "
                  f"{min(deq_times):.2f} | {min(ddim_times):.2f} | {min(deq_times) / min(ddim_times):.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
