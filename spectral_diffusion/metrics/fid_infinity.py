"""FID∞ (Chong & Forsyth 2020, "Effectively Unbiased FID and Inception Score and where to find them", Sec. 3):
FID is biased upwards by a term that falls as 1/N in the number N of generated images, so FIDs at different N do
not compare. FID∞ computes FID on random subsets of several sizes N, fits FID_N = FID∞ + k / N by least squares
and reports the intercept: an estimate of the FID of infinitely many generated images, comparable across N.
"""

from __future__ import annotations

import torch
from torch import Tensor

from spectral_diffusion.metrics.bootstrap import fid_replicates

# Subset sizes run evenly from this fraction of the generated set to the whole set (the paper: 5k..50k, i.e. 1/10;
# with the project's 1,000 images a fifth keeps the smallest subset at 200).
SMALLEST_FRACTION = 0.2
NUM_SIZES = 10


def subset_sizes(count: int, num_sizes: int = NUM_SIZES, smallest_fraction: float = SMALLEST_FRACTION) -> list[int]:
    """Distinct subset sizes evenly spaced from ``smallest_fraction · count`` (at least 2) to ``count``."""
    smallest = max(2, round(smallest_fraction * count))
    return sorted({round(value) for value in torch.linspace(smallest, count, num_sizes).tolist()})


def fid_infinity(real: Tensor, fake: Tensor, *, sizes: list[int] | None = None, seed: int = 0) -> dict:
    """FID∞ of generated features ``fake`` (N, D) against ``real`` (M, D): FID of one random subset of ``fake`` per
    size in ``sizes`` (default ``subset_sizes(N)``) against all of ``real``, the line FID = a + b / size fitted by
    least squares, a returned. Returns ``{"fid_inf": a, "slope": b, "sizes": [...], "fids": [...]}``; the subsets
    are drawn from a generator seeded by ``seed``."""
    sizes = subset_sizes(len(fake)) if sizes is None else sorted(sizes)
    if len(sizes) < 2 or sizes[0] < 2 or sizes[-1] > len(fake):
        raise ValueError(f"FID∞ needs at least two subset sizes in [2, {len(fake)}], got {sizes}")
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.zeros(len(sizes), len(fake), dtype=torch.float64)
    for row, size in enumerate(sizes):
        chosen[row, torch.randperm(len(fake), generator=generator)[:size]] = 1.0
    everything = torch.ones(len(sizes), len(real), dtype=torch.float64)
    fids = fid_replicates(real, fake, everything, chosen)
    design = torch.stack([torch.ones(len(sizes), dtype=torch.float64),
                          1.0 / torch.tensor(sizes, dtype=torch.float64)], dim=1)
    intercept, slope = torch.linalg.lstsq(design, fids[:, None]).solution[:, 0]
    return {"fid_inf": float(intercept), "slope": float(slope), "sizes": sizes, "fids": fids.tolist()}
