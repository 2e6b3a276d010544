"""Interpolation baselines for sparse-to-dense field reconstruction: scipy's ``griddata`` (nearest, linear, cubic)
from the observed points of a field to any query coordinates, the yardstick the neural field is measured against.

``linear`` interpolates barycentrically on the Delaunay triangulation of the observed points; ``cubic`` is the
piecewise cubic, C¹, Clough–Tocher interpolant on the same triangles (2-D only), the ``CloughTocher2DInterpolator``
that griddata builds, called directly to tighten its gradient-estimation tolerance from griddata's fixed 1e-6 to
``CUBIC_GRADIENT_TOL`` (it then reproduces a linear field to ~1e-12 instead of ~1e-8); ``nearest`` copies the value of
the closest observed point. Linear and cubic are undefined outside the convex hull
of the observations (griddata returns NaN there); those query points get the nearest observed value instead, so every
method returns a value at every query point and the comparison covers the whole grid.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from scipy.interpolate import CloughTocher2DInterpolator, griddata

from spectral_diffusion.utils.validation import ConfigError, check_choice

INTERPOLATION_METHODS = ("nearest", "linear", "cubic")

# Stopping tolerance of the Clough-Tocher gradient estimation (scipy's default, which griddata uses, is 1e-6).
CUBIC_GRADIENT_TOL = 1e-10


def interpolate_observations(coords: np.ndarray, values: np.ndarray, query: np.ndarray, method: str) -> np.ndarray:
    """Values at ``query`` (M, d) interpolated from observations ``coords`` (N, d), ``values`` (N,) or (N, c).

    Computed in float64. Query points outside the convex hull of ``coords`` (where ``linear`` and ``cubic`` are
    undefined) take the value of the nearest observation. Returns (M,) or (M, c) like ``values``.
    """
    check_choice("method", method, INTERPOLATION_METHODS)
    coords = np.asarray(coords, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    query = np.asarray(query, dtype=np.float64)
    if coords.ndim != 2 or query.ndim != 2 or coords.shape[1] != query.shape[1]:
        raise ValueError(f"coords {coords.shape} and query {query.shape} must be (N, d) and (M, d) with the same d")
    if len(values) != len(coords):
        raise ValueError(f"{len(values)} values for {len(coords)} observed coordinates")
    if method == "cubic" and coords.shape[1] != 2:
        raise ConfigError(f"method='cubic' interpolates 2-D fields only (griddata); these coordinates are "
                          f"{coords.shape[1]}-D, choose 'nearest' or 'linear'")
    points = coords[:, 0] if coords.shape[1] == 1 else coords
    targets = query[:, 0] if query.shape[1] == 1 else query
    # griddata's 1-D linear path (interp1d) wants increasing coordinates; sorting does not change the interpolant.
    if coords.shape[1] == 1:
        order = np.argsort(points, kind="stable")
        points, values = points[order], values[order]
    if method == "cubic":
        result = CloughTocher2DInterpolator(points, values, tol=CUBIC_GRADIENT_TOL)(targets)
    else:
        result = griddata(points, values, targets, method=method)
    if method != "nearest":
        outside = np.isnan(result) if result.ndim == 1 else np.isnan(result).any(axis=1)
        if outside.any():
            result[outside] = griddata(points, values, targets[outside], method="nearest")
    return result


def interpolate_batch(batch: Mapping[str, torch.Tensor], query: torch.Tensor, method: str) -> torch.Tensor:
    """Reconstruct every field of a batch (``coords`` (B, N, d), ``values`` (B, N, c), ``mask`` (B, N) of observed
    points) at ``query`` (M, d), from its observed points only: (B, M, c) float32.

    A field with fewer observations than a triangulation needs (d + 1 for ``linear`` and ``cubic``, points not all
    on one line) raises scipy's error rather than returning a silent constant.
    """
    coords, values, mask = batch["coords"], batch["values"], batch["mask"]
    if not mask.any(dim=1).all():
        raise ValueError("a field of the batch has no observed point; nothing to interpolate from")
    query_np = query.detach().cpu().double().numpy()
    rows = []
    for field_coords, field_values, observed in zip(coords, values, mask):
        rows.append(interpolate_observations(field_coords[observed].cpu().numpy(),
                                             field_values[observed].cpu().numpy(), query_np, method))
    return torch.from_numpy(np.stack(rows)).to(torch.float32)
