"""Diffusion maths: schedules, forward processes in orthonormal bases, prediction conversions, samplers."""

from spectral_diffusion.diffusion.process import PREDICTIONS, GaussianProcess
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
    "PREDICTIONS",
    "BandedProcess",
    "CosineSchedule",
    "EqualizedProcess",
    "FlowProcess",
    "GaussianProcess",
    "LinearSchedule",
    "RectifiedFlowSchedule",
    "Schedule",
]
