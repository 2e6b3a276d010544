"""Per-sample random generators, so a sample never depends on the batch it was drawn in.

Follows EDM's ``StackedRandomGenerator`` (Karras et al. 2022, ``generate.py``): sample ``i`` of a
run owns ``torch.Generator`` seeded with ``seed + i``; every random draw for that sample comes from it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Generators = torch.Generator | Sequence[torch.Generator] | None


def sample_generators(seed: int, start: int, count: int) -> list[torch.Generator]:
    """Generators for samples ``start .. start+count-1`` of a run seeded with ``seed``."""
    return [torch.Generator().manual_seed(int(seed) + start + i) for i in range(count)]


def randn(shape: Sequence[int], generator: Generators = None, *, device=None, dtype=None) -> Tensor:
    """Standard normal noise of ``shape``; with a list of generators, row ``i`` comes from generator ``i``.

    Seeded draws happen on the CPU (where the generators live) and are then moved, so the numbers
    are the same on every device; unseeded draws (training noise) come straight from the device.
    """
    dtype = dtype or torch.float32
    if generator is None:  # the global stream: draw where the tensor will live
        return torch.randn(tuple(shape), device=device, dtype=dtype)
    if isinstance(generator, torch.Generator):
        noise = torch.randn(tuple(shape), generator=generator, dtype=dtype)
    else:
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
        noise = torch.stack([torch.randn(tuple(shape[1:]), generator=g, dtype=dtype) for g in generator])
    return noise.to(device) if device is not None else noise
