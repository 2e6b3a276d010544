"""Matplotlib figures of the metric battery: radial power spectra, wavelet energy ratios,
per-band magnitude/phase histograms, and a generated sample grid beside a real one.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot, so no GUI backend or global
figure registry is involved (it renders with Agg); the caller saves it (``fig.savefig``) or logs it
(TensorBoard ``add_figure``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from torch import Tensor

from spectral_diffusion.metrics.spectral import ORIENTATIONS

REAL_STYLE = {"color": "tab:blue", "label": "real"}
FAKE_STYLE = {"color": "tab:orange", "label": "generated"}


def radial_spectrum_figure(frequency: Tensor, real: Tensor, fake: Tensor) -> Figure:
    """Radially averaged power spectra of real and generated images, log-log (DC bin left out)."""
    figure = Figure(figsize=(5, 4))
    axes = figure.add_subplot()
    positive = frequency > 0
    axes.loglog(frequency[positive].numpy(), real[positive].numpy(), marker="o", **REAL_STYLE)
    axes.loglog(frequency[positive].numpy(), fake[positive].numpy(), marker="s", **FAKE_STYLE)
    axes.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on a one-decade axis
    axes.set_xlabel("|f| (cycles per pixel)")
    axes.set_ylabel("mean power |X(f)|²")
    axes.set_title("Radial power spectrum")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return figure


def wavelet_energy_figure(real: Tensor, fake: Tensor) -> Figure:
    """Generated/real energy ratio of every wavelet detail sub-band, grouped by level (1 = finest)."""
    levels = real.shape[0]
    ratio = (fake / real.clamp_min(1e-300)).numpy()
    figure = Figure(figsize=(max(4, 1.6 * levels + 2), 4))
    axes = figure.add_subplot()
    width = 0.8 / len(ORIENTATIONS)
    positions = np.arange(levels)
    for index, orientation in enumerate(ORIENTATIONS):
        axes.bar(positions + (index - 1) * width, ratio[:, index], width, label=orientation.upper())
    axes.axhline(1.0, color="black", linewidth=1, linestyle="--")
    axes.set_xticks(positions, [f"level {level + 1}" for level in range(levels)])
    axes.set_ylabel("energy ratio generated / real")
    axes.set_title("Wavelet sub-band energy")
    axes.legend()
    figure.tight_layout()
    return figure


def _density(counts: Tensor, edges: Tensor) -> np.ndarray:
    counts = counts.double()
    total = counts.sum()
    widths = (edges[1:] - edges[:-1]).double()
    return (counts / (total * widths)).numpy() if total > 0 else np.zeros(len(counts))


def band_histogram_figure(histograms: dict) -> Figure:
    """Per radial band: histograms of log10 |X| (top row) and of the phase arg X (bottom row)."""
    bands = histograms["magnitude_histogram_real"].shape[0]
    figure = Figure(figsize=(3 * bands, 5.5))
    grid = figure.subplots(2, bands, squeeze=False)
    for row, (name, edges_key, label) in enumerate((("magnitude_histogram", "magnitude_edges", "log10 |X|"),
                                                     ("phase_histogram", "phase_edges", "arg X (rad)"))):
        edges = histograms[edges_key]
        for band in range(bands):
            axes = grid[row, band]
            for split, style in (("real", REAL_STYLE), ("fake", FAKE_STYLE)):
                density = _density(histograms[f"{name}_{split}"][band], edges)
                axes.stairs(density, edges.numpy(), **style)
            axes.set_xlabel(label)
            if row == 0:
                axes.set_title(f"band {band}")
    grid[0, 0].legend()
    figure.suptitle("Fourier magnitude and phase per radial band")
    figure.tight_layout()
    return figure


def image_grid(images: Tensor, columns: int) -> np.ndarray:
    """[-1, 1] (N, C, H, W) → one [0, 1] (rows·H, columns·W[, C]) mosaic with 1-pixel gaps."""
    count, channels, height, width = images.shape
    rows = math.ceil(count / columns)
    canvas = torch.ones(channels, rows * (height + 1) - 1, columns * (width + 1) - 1)
    for index, image in enumerate(((images.float().clamp(-1, 1) + 1) / 2).cpu()):
        row, column = divmod(index, columns)
        canvas[:, row * (height + 1):row * (height + 1) + height, column * (width + 1):column * (width + 1) + width] = image
    array = canvas.permute(1, 2, 0).numpy()
    return array[..., 0] if channels == 1 else array


def sample_grid_figure(real: Tensor, fake: Tensor, count: int = 64) -> Figure:
    """The first ``count`` generated images beside the first ``count`` real ones."""
    count = min(count, len(real), len(fake))
    columns = max(1, math.ceil(math.sqrt(count)))
    figure = Figure(figsize=(9, 4.8))
    for index, (images, title) in enumerate(((real, "real"), (fake, "generated"))):
        axes = figure.add_subplot(1, 2, index + 1)
        axes.imshow(image_grid(images[:count], columns), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes.set_title(title)
        axes.axis("off")
    figure.tight_layout()
    return figure
