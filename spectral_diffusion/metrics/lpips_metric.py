"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric")
through the ``lpips`` package, without ever downloading: sample diversity and paired distances.

The package ships its calibrated linear layers; the ImageNet backbone (torchvision AlexNet, VGG16 or
SqueezeNet 1.1) is loaded from ``weights_path`` or ``$TORCH_HOME/hub/checkpoints/<torchvision file>``.
When neither exists ``load_lpips`` returns the reason instead of a model, and callers skip LPIPS.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from spectral_diffusion.metrics.statistics import TwoSampleMetric
from spectral_diffusion.utils.validation import ConfigError, check_choice

# torchvision's file names for the ImageNet weights LPIPS builds on (as torch.hub caches them).
BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
# AlexNet's stride-4 stem and three max-pools need at least this many pixels per side.
MIN_LPIPS_SIZE = 32


def backbone_path(net: str, weights_path: str | os.PathLike | None = None) -> tuple[Path | None, str | None]:
    """Where the backbone weights are: (path, None), or (None, why not)."""
    check_choice("battery.lpips_net", net, BACKBONE_FILES)
    if weights_path is not None:
        path = Path(weights_path)
        if path.is_file():
            return path, None
        return None, f"battery.lpips_weights={str(weights_path)!r} does not exist"
    path = Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]
    if path.is_file():
        return path, None
    return None, (f"no {net} backbone weights: set battery.lpips_weights to a local copy of torchvision's "
                  f"{BACKBONE_FILES[net]} or place it at {path} (nothing is downloaded)")


def _backbone_state_dict(trunk: nn.Module, torchvision_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map torchvision ``features.{i}.*`` keys onto the lpips trunk's ``slice{k}.{i}.*`` modules."""
    slice_of = {}
    for slice_name, module in trunk.named_children():
        for index in module._modules:
            slice_of[index] = slice_name
    mapped = {}
    for key, value in torchvision_state.items():
        parts = key.split(".")
        if parts[0] == "features" and parts[1] in slice_of:
            mapped[".".join([slice_of[parts[1]], *parts[1:]])] = value
    return mapped


def load_lpips(net: str = "alex", weights_path: str | os.PathLike | None = None,
               device: str | torch.device = "cpu") -> tuple[nn.Module | None, str | None]:
    """An eval-mode ``lpips.LPIPS`` with the local backbone weights, or (None, reason) if they are absent."""
    import lpips

    path, reason = backbone_path(net, weights_path)
    if path is None:
        return None, reason
    # lpips prints a banner even with verbose=False and calls torchvision's deprecated `pretrained=` API
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        model = lpips.LPIPS(pretrained=True, net=net, pnet_rand=True, verbose=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.net.load_state_dict(_backbone_state_dict(model.net, state), strict=True)
    except RuntimeError as error:
        return None, f"{path} is not torchvision's {net} state dict ({str(error).splitlines()[0]})"
    return model.eval().requires_grad_(False).to(device), None


def lpips_input(images: Tensor, size: int) -> Tensor:
    """[-1, 1] (N, 1|3, H, W) → 3-channel (N, 3, size, size), bilinear, as LPIPS expects."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    elif images.shape[1] != 3:
        raise ValueError(f"LPIPS takes 1- or 3-channel images, got {images.shape[1]} channels")
    images = images.float().clamp(-1, 1)
    if tuple(images.shape[-2:]) != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images


@torch.no_grad()
def lpips_distance(model: nn.Module, first: Tensor, second: Tensor, *, size: int = 64, batch_size: int = 256) -> Tensor:
    """LPIPS d(first_i, second_i) for each pair i (paired comparisons), float64 (N,)."""
    if first.shape != second.shape:
        raise ValueError(f"paired LPIPS needs equal shapes, got {tuple(first.shape)} and {tuple(second.shape)}")
    device = next(model.parameters()).device
    distances = [
        model(lpips_input(a.to(device), size), lpips_input(b.to(device), size)).flatten().double().cpu()
        for a, b in zip(first.split(batch_size), second.split(batch_size))
    ]
    return torch.cat(distances)


def random_pairs(count: int, pairs: int, seed: int) -> tuple[Tensor, Tensor]:
    """``pairs`` index pairs (i, j), i ≠ j, drawn uniformly with a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    first = torch.randint(count, (pairs,), generator=generator)
    offset = torch.randint(1, count, (pairs,), generator=generator)
    return first, (first + offset) % count


class LPIPSDiversity(TwoSampleMetric):
    """``lpips_diversity``: mean LPIPS over ``pairs`` random pairs of distinct generated images;
    ``lpips_diversity_real`` the same for the real images, ``lpips_diversity_ratio`` their quotient
    (below 1: less diverse than the data, a sign of mode collapse). Keeps the images (``cat`` states).
    """

    def __init__(self, model: nn.Module, pairs: int = 256, size: int = 64, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if int(pairs) != pairs or pairs < 1:
            raise ConfigError(f"battery.lpips_pairs={pairs!r} is invalid; it must be an integer >= 1")
        if int(size) != size or size < MIN_LPIPS_SIZE:
            raise ConfigError(f"battery.lpips_size={size!r} is invalid; it must be an integer >= {MIN_LPIPS_SIZE}")
        self.model, self.pairs, self.size, self.seed = model, int(pairs), int(size), int(seed)
        self._add_pair("images", None, reduce="cat")

    def _update(self, images: Tensor, split: str) -> None:
        self._append("images", split, images.to(self.device, torch.float32))

    def diversity(self, split: str) -> float:
        images = self.state("images", split)
        if len(images) < 2:
            raise ValueError(f"LPIPS diversity needs at least 2 {split} images")
        first, second = random_pairs(len(images), self.pairs, self.seed)
        return float(lpips_distance(self.model, images[first], images[second], size=self.size).mean())

    def compute(self) -> dict[str, float]:
        fake, real = self.diversity("fake"), self.diversity("real")
        return {"lpips_diversity": fake, "lpips_diversity_real": real,
                "lpips_diversity_ratio": fake / real if real > 0 else float("inf")}
