"""Diffusion maths: schedules, forward processes in orthonormal bases, prediction types, samplers."""

from spectral_diffusion.diffusion.predictions import (
    EpsPrediction,
    FlowPrediction,
    Prediction,
    VPrediction,
    X0Prediction,
)
from spectral_diffusion.diffusion.process import GaussianProcess
from spectral_diffusion.diffusion.processes import (
    BandedProcess,
    EqualizedProcess,
    FlowProcess,
)
from spectral_diffusion.diffusion.schedules import (
    CosineSchedule,
    LinearSchedule,
    RectifiedFlowSchedule,
    Schedule,
)

__all__ = [
    "BandedProcess",
    "CosineSchedule",
    "EpsPrediction",
    "EqualizedProcess",
    "FlowPrediction",
    "FlowProcess",
    "GaussianProcess",
    "LinearSchedule",
    "Prediction",
    "RectifiedFlowSchedule",
    "Schedule",
    "VPrediction",
    "X0Prediction",
]
