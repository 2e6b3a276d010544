"""Sampling with its runtime: wall-clock seconds per image and per network evaluation, NFE, parameters and peak
memory, as ``sd-train`` and ``sd-eval`` report them."""

from __future__ import annotations

import math
import resource
import time

import torch
from torch import Tensor


def peak_memory_mb(device: str | torch.device = "cpu") -> float:
    """Peak memory in MiB: ``torch.cuda.max_memory_allocated`` on a CUDA device, else the process's
    peak resident set size (``getrusage`` ru_maxrss, KiB on Linux).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_generate(module, num_samples: int, *, sampler=None, seed: int = 0, batch_size: int = 256,
                   use_ema: bool = True, progress=None) -> tuple[Tensor, dict[str, float]]:
    """``module.generate`` with its runtime: seconds per image and per network evaluation, NFE, parameters,
    peak memory (CUDA: allocated while sampling; CPU: the process's peak resident set size), and from an iterative
    sampler (``deq``) the sweeps it used (``sampler_iterations``)."""
    device = module.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    evaluations_before = module.network_evaluations
    started = time.perf_counter()
    samples = module.generate(num_samples, sampler=sampler, seed=seed, batch_size=batch_size, use_ema=use_ema,
                              progress=progress)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    info = getattr(module, "last_sampling_info", None) or {}
    if "nfe" in info:  # what the sampler reported (a mean over batches for adaptive solvers)
        nfe = int(info["nfe"]) if float(info["nfe"]).is_integer() else float(info["nfe"])
    else:  # network calls per trajectory: every sampler call (a batch, or one class of it) runs one trajectory
        batches = info.get("batches") or max(1, math.ceil(num_samples / batch_size))
        nfe = (module.network_evaluations - evaluations_before) // batches
    runtime = {
        "sample_seconds": seconds,
        "sample_seconds_per_image": seconds / max(1, len(samples)),
        "sampler_nfe": nfe,
        "sample_seconds_per_image_per_nfe": seconds / max(1, len(samples)) / max(1, nfe),
        "num_parameters": module.num_parameters(),
        "peak_memory_mb": peak_memory_mb(device),
    }
    if "iterations" in info:  # an iterative sampler (deq): the most sweeps any batch needed
        runtime["sampler_iterations"] = int(info["iterations"])
    return samples, runtime
