"""Per-sample loss weights that depend on the noise level: min-SNR-γ for every prediction type.

Min-SNR-γ (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy", eq. 7–9) is
defined on the x0 error: weight min(SNR, γ). A loss on another prediction measures the x0 error times a
factor λ (``Prediction.x0_error_scale``); dividing by λ gives every prediction type the same effective weighting.
"""

from __future__ import annotations

import torch
from torch import Tensor

from spectral_diffusion.diffusion.predictions import Prediction, per_sample_alpha_sigma


def min_snr_weight(prediction: Prediction, t: Tensor, x0: Tensor, process, gamma: float) -> Tensor:
    """Per-sample (B,) weight of a loss on ``prediction`` so that it weighs the x0 error by min(SNR, γ)
    (Hang et al. 2023), SNR = α²/σ² from the process's per-sample (α, σ) at ``t``.

    For VP processes this is the paper's min(SNR, γ) for x0, min(SNR, γ)/SNR for ε and
    min(SNR, γ)/(SNR + 1) for v, all from one expression.
    """
    alpha, sigma = per_sample_alpha_sigma(process, t, x0)
    snr = alpha.square() / sigma.square()
    return torch.clamp(snr, max=float(gamma)) / prediction.x0_error_scale(t, x0, process)
