"""Rotation-controlled sampling (Anjum et al. 2024, arXiv 2411.09174, "Config E"): the same noise x_T rotated by each angle θ_k (or rotated
by θ_k / N after each of the N steps, as the seed did) and sampled; frames as a strip PNG and an animated GIF, and
their consistency: the PSNR between consecutive frames after undoing each frame's rotation (high for a
rotation-equivariant model). Rotations are the band-limited ones of ``metrics.equivariance``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from spectral_diffusion.metrics.equivariance import MaskedPSNR, check_square, disc_mask, rotate
from spectral_diffusion.utils.validation import ConfigError, check_int


def check_angles(angles: Sequence[float]) -> list[float]:
    """``rotation.angles`` as floats: a non-empty list of finite numbers (degrees)."""
    if isinstance(angles, (str, bytes)) or not isinstance(angles, Sequence) or not len(angles):
        raise ConfigError(f"rotation.angles={angles!r} is invalid; give a non-empty list of angles in degrees")
    values = []
    for index, angle in enumerate(angles):
        if isinstance(angle, bool) or not isinstance(angle, (int, float)) or not math.isfinite(angle):
            raise ConfigError(f"rotation.angles[{index}]={angle!r} is invalid; it must be a finite number (degrees)")
        values.append(float(angle))
    return values


def frame_angles(frames: int, start: float = -90.0, stop: float = 90.0) -> list[float]:
    """``rotation.frames`` equally spaced angles from ``start`` to ``stop`` degrees, both included."""
    frames = check_int("rotation.frames", frames, 2)
    return np.linspace(start, stop, frames).tolist()


@torch.no_grad()
def rotated_samples(denoise_fn, process, sampler, x_T: Tensor, angles: Sequence[float], *,
                    every_step: bool = False, steps: int | None = None) -> Tensor:
    """Frames (K, B, C, H, W): ``sampler(denoise_fn, process, x, callback=...)`` from x_T rotated by each angle.

    With ``every_step`` the rotation is spread over the trajectory as in Anjum et al. 2024: x_T unrotated, then x_t
    rotated in place by θ / ``steps`` after each of the ``steps`` sampler steps, through the sampler's
    ``callback`` (for samplers that continue from the ``x`` they report: ddpm, ddim, euler, heun).
    """
    angles = check_angles(angles)
    check_square(x_T, "data images (rotation)")
    if every_step:
        steps = check_int("sampler.steps", steps, 1)
    frames = []
    for angle in angles:
        if every_step:
            def turn(state, increment=angle / steps):
                state["x"].copy_(rotate(state["x"], increment))
            frames.append(sampler(denoise_fn, process, x_T.clone(), callback=turn))
        else:
            frames.append(sampler(denoise_fn, process, rotate(x_T, angle)))
    return torch.stack(frames).clamp(-1, 1)


def frame_consistency(frames: Tensor, angles: Sequence[float], disc_fraction: float = 0.7) -> list[float]:
    """PSNR (dB, peak 2, central disc) between frames k and k + 1 after rotating each back by its angle."""
    angles = check_angles(angles)
    if len(angles) != len(frames):
        raise ConfigError(f"rotation.angles has {len(angles)} angles for {len(frames)} frames")
    size = check_square(frames, "frames")
    undone = [rotate(frame.double(), -angle) for frame, angle in zip(frames, angles)]
    values = []
    for first, second in zip(undone, undone[1:]):
        meter = MaskedPSNR(disc_mask(size, disc_fraction, device=frames.device))
        meter.update(first, second)
        values.append(meter.compute())
    return values


def to_uint8(images: Tensor) -> np.ndarray:
    """(..., C, H, W) in [-1, 1] to (..., H, W, C) uint8."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(-3, -1).cpu().numpy()


def frame_grid(frame: Tensor) -> np.ndarray:
    """One frame's B images (B, C, H, W) side by side: (H, B * W, C) uint8."""
    return np.concatenate(list(to_uint8(frame)), axis=1)


def pil_image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)


def save_strip(frames: Tensor, path: str | Path) -> Path:
    """A PNG with one row per sample and one column per frame."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [np.concatenate(list(to_uint8(frames[:, index])), axis=1) for index in range(frames.shape[1])]
    pil_image(np.concatenate(rows, axis=0)).save(path)
    return path


def save_gif(frames: Tensor, path: str | Path, milliseconds: int = 200) -> Path:
    """An animated GIF with one image per frame (the samples side by side), looping."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [pil_image(frame_grid(frame)) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=milliseconds, loop=0)
    return path


def rotation_angles(angles: Sequence[float] | None, frames: int | None) -> list[float] | None:
    """The angles of ``sd-sample``'s ``rotation`` block: ``rotation.angles``, or ``rotation.frames`` angles over
    [−90°, 90°], or None when neither is set (no rotation); both set is an error."""
    if angles is not None and frames is not None:
        raise ConfigError("rotation.angles and rotation.frames are both set; give one of them")
    if angles is not None:
        return check_angles(list(angles) if not isinstance(angles, (str, bytes)) else angles)
    return None if frames is None else frame_angles(frames)


@torch.no_grad()
def sample_rotations(module, sampler, angles: Sequence[float], output_dir: str | Path, *, count: int, seed: int = 0,
                     every_step: bool = False, use_ema: bool = True) -> dict[str, object]:
    """``count`` samples of a trained module at every angle (x_T of sample i from generator ``seed + i``):
    ``rotation_strip.png``, ``rotation.gif`` and the frame-to-frame consistency, returned and written to
    ``rotation.json`` in ``output_dir``."""
    import json

    from spectral_diffusion.utils.random import sample_generators

    angles = check_angles(angles)
    module.eval()
    x_T = module.process.prior((count, *module.image_shape), sample_generators(seed, 0, count), device=module.device)
    steps = getattr(sampler, "keywords", {}).get("steps")
    frames = rotated_samples(module.self_conditioned_denoiser(use_ema=use_ema), module.process, sampler, x_T, angles,
                             every_step=every_step, steps=steps).cpu()
    output_dir = Path(output_dir)
    consistency = frame_consistency(frames, angles)
    report = {"angles": angles, "every_step": every_step, "frame_psnr": consistency,
              "frame_psnr_mean": sum(consistency) / len(consistency) if consistency else float("nan"),
              "strip": str(save_strip(frames, output_dir / "rotation_strip.png")),
              "gif": str(save_gif(frames, output_dir / "rotation.gif"))}
    (output_dir / "rotation.json").write_text(json.dumps(report, indent=2))
    return report
