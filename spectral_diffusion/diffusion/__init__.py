"""Diffusion maths: schedules, forward processes in orthonormal bases, prediction conversions, samplers."""

from spectral_diffusion.diffusion.process import PREDICTIONS, GaussianProcess
from spectral_diffusion.diffusion.schedules import CosineSchedule, LinearSchedule, Schedule

__all__ = ["PREDICTIONS", "CosineSchedule", "GaussianProcess", "LinearSchedule", "Schedule"]
