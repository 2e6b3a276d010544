"""Few-step generation from a trained checkpoint: reflow, progressive and consistency distillation (``sd-distill``).

Each method is a ``DistillationMethod`` chosen by ``conf/method/*.yaml``; ``DistillationModule`` trains its
student through Lightning and ``distill`` is the whole run (``spectral_diffusion.distill.run``).
"""

from spectral_diffusion.distill.base import DistillationMethod, FrozenDenoiser, ddim_step, euler_step
from spectral_diffusion.distill.consistency import (
    ConsistencyDistillation,
    ConsistencyPrediction,
    consistency_sampling,
)
from spectral_diffusion.distill.module import DistillationModule
from spectral_diffusion.distill.progressive import (
    ProgressiveDistillation,
    nested_grid,
    progressive_ddim,
    two_step_target,
)
from spectral_diffusion.distill.reflow import CoupledFlowProcess, Reflow, generate_pairs

__all__ = [
    "ConsistencyDistillation",
    "ConsistencyPrediction",
    "CoupledFlowProcess",
    "DistillationMethod",
    "DistillationModule",
    "FrozenDenoiser",
    "ProgressiveDistillation",
    "Reflow",
    "consistency_sampling",
    "ddim_step",
    "euler_step",
    "generate_pairs",
    "nested_grid",
    "progressive_ddim",
    "two_step_target",
]
