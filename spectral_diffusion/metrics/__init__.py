"""Evaluation metrics: FID/KID with a configurable feature extractor (``quality``, ``features``) and the
metric battery of spectral, texture, statistical and perceptual comparisons (``battery``).
"""

from spectral_diffusion.metrics.battery import (
    BatteryConfig,
    BatteryResult,
    battery_figures,
    evaluate_battery,
    severity,
)
from spectral_diffusion.metrics.lpips_metric import (
    LPIPSDiversity,
    load_lpips,
    lpips_distance,
)
from spectral_diffusion.metrics.spectral import (
    BandStatistics,
    PowerSpectrum,
    WaveletEnergy,
)
from spectral_diffusion.metrics.statistics import (
    ClassifierAUC,
    PixelHistogram,
    PixelTests,
    PrecisionRecall,
)
from spectral_diffusion.metrics.texture import GLCMTexture, GradientMagnitude

__all__ = [
    "BandStatistics",
    "BatteryConfig",
    "BatteryResult",
    "ClassifierAUC",
    "GLCMTexture",
    "GradientMagnitude",
    "LPIPSDiversity",
    "PixelHistogram",
    "PixelTests",
    "PowerSpectrum",
    "PrecisionRecall",
    "WaveletEnergy",
    "battery_figures",
    "evaluate_battery",
    "load_lpips",
    "lpips_distance",
    "severity",
]
