"""Field data: signals stored as values on a regular grid in [−1, 1]^d with a per-example observation mask.

``FieldDataModule`` is the base every field dataset subclasses (1-D ``Signals1D`` here, 2-D MNIST fields in
``field2d``); it owns the grid, the fixed split, the batches (dicts ``coords``, ``values``, ``mask``, optional
``label``) and the held-out set as one batch. A subclass only provides the tensors (``load_fields``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from lightning import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from spectral_diffusion.utils.validation import ConfigError, check_int, check_positive


def check_observed_fraction(value: Any, key: str = "data.observed_fraction") -> float:
    """The fraction of grid points an encoder observes, a number in (0, 1], or a ConfigError naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"{key}={value!r} is invalid; it must lie in (0, 1] (0.2 observes 20 % of the points)")
    return float(value)


def regular_grid(resolution: int | tuple[int, ...] | list[int], coord_dim: int, key: str = "resolution", *,
                 centred: bool = False) -> Tensor:
    """Coordinates (prod(resolution), coord_dim) float32 of a regular grid on [−1, 1]^d, both ends included, or
    with ``centred`` the cell centres (2k + 1)/n − 1 of n equal cells (pixel centres: a 56 grid refines a 28 one).

    Axis k of the grid is coordinate k, and the points are in row-major order of an array shaped
    ``resolution``: ``values.reshape(-1)`` of such an array lines up with the rows (for images (H, W):
    coordinate 0 is the row, coordinate 1 the column). A single int means that many points per axis; a bad
    resolution is a ConfigError naming ``key``.
    """
    single = isinstance(resolution, int) and not isinstance(resolution, bool)
    sizes = [resolution] * coord_dim if single else list(resolution)
    if len(sizes) != coord_dim:
        raise ConfigError(f"{key}={list(sizes)} has {len(sizes)} axes; this field has {coord_dim}")
    for k, size in enumerate(sizes):
        check_int(f"{key}[{k}]" if coord_dim > 1 else key, size, 2)
    if centred:
        axes = [(2.0 * torch.arange(int(size), dtype=torch.float64) + 1.0).div(int(size)).sub(1.0).float()
                for size in sizes]
    else:
        axes = [torch.linspace(-1.0, 1.0, int(size)) for size in sizes]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, coord_dim)


def random_masks(count: int, num_points: int, fraction: float, generator: torch.Generator) -> Tensor:
    """(count, num_points) bool: each row observes max(1, round(fraction · num_points)) points drawn uniformly
    without replacement, so every example has the same number of observations."""
    observed = max(1, round(fraction * num_points))
    order = torch.rand(count, num_points, generator=generator).argsort(dim=1)
    masks = torch.zeros(count, num_points, dtype=torch.bool)
    masks.scatter_(1, order[:, :observed], True)
    return masks


@dataclass
class FieldSplits:
    """What a subclass's ``load_fields`` returns: values (N, P, c) on the grid and masks (N, P) per split."""

    train_values: Tensor
    train_masks: Tensor
    val_values: Tensor
    val_masks: Tensor
    train_labels: Tensor | None = None
    val_labels: Tensor | None = None


class FieldBatches(Dataset):
    """Examples of one split; ``__getitems__`` returns a whole field batch in one indexing call."""

    def __init__(self, coords: Tensor, values: Tensor, masks: Tensor, labels: Tensor | None) -> None:
        self.coords, self.values, self.masks, self.labels = coords, values, masks, labels

    def __len__(self) -> int:
        return self.values.shape[0]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return field_batch(self.coords, self.values.index_select(0, index), self.masks.index_select(0, index),
                           None if self.labels is None else self.labels.index_select(0, index))


def field_batch(coords: Tensor, values: Tensor, masks: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
    """A field batch dict: ``coords`` (B, N, d) (the shared grid, expanded without a copy), ``values`` (B, N, c),
    ``mask`` (B, N) bool and, for labelled data, ``label`` (B,) long."""
    batch = {"coords": coords.expand(values.shape[0], *coords.shape), "values": values, "mask": masks}
    if labels is not None:
        batch["label"] = labels
    return batch


def _whole_batch(batch):
    return batch


class FieldDataModule(LightningDataModule, ABC):
    """Fields on a regular grid of ``grid_shape`` in [−1, 1]^coord_dim with ``value_dim`` channels, a fixed
    train/held-out split and one fixed observation mask per example (``observed_fraction`` of the points).

    Subclasses set ``coord_dim``, ``value_dim`` and ``grid_shape`` and implement ``load_fields``; everything
    derived from a seed is drawn from a private generator, so data and masks never move with the run's seed.
    Training batches are field batches (see ``field_batch``); ``val_fields`` is the whole held-out set.
    """

    coord_dim: int
    value_dim: int
    grid_shape: tuple[int, ...]

    def __init__(self, observed_fraction: float = 0.2, batch_size: int = 64, eval_batch_size: int | None = None,
                 num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.observed_fraction = check_observed_fraction(observed_fraction)
        self.batch_size = check_int("data.batch_size", batch_size, 1)
        self.eval_batch_size = self.batch_size if eval_batch_size is None else check_int(
            "data.eval_batch_size", eval_batch_size, 1)
        self.num_workers = check_int("data.num_workers", num_workers, 0)
        self.seed = check_int("data.seed", seed)
        self._splits: FieldSplits | None = None

    @abstractmethod
    def load_fields(self) -> FieldSplits:
        """Values on ``grid()`` (row-major, see ``regular_grid``) and observation masks of both splits."""

    # --- geometry ----------------------------------------------------------------------------------
    @property
    def num_points(self) -> int:
        return math.prod(self.grid_shape)

    # Whether the data sits at cell centres (images: pixel centres) rather than on an edge-to-edge grid; a trained
    # model decodes on the same kind of grid (its ``field_shape["grid_centred"]``).
    grid_centred = False

    def grid(self, resolution: int | tuple[int, ...] | None = None) -> Tensor:
        """The (prod(resolution), coord_dim) regular grid in [−1, 1] at any resolution (default: the data's)."""
        return regular_grid(self.grid_shape if resolution is None else resolution, self.coord_dim,
                            centred=self.grid_centred)

    # --- data ------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._splits is not None:
            return
        splits = self.load_fields()
        for split in ("train", "val"):
            values, masks = getattr(splits, f"{split}_values"), getattr(splits, f"{split}_masks")
            if values.shape[1:] != (self.num_points, self.value_dim) or masks.shape != values.shape[:2]:
                raise ValueError(f"{type(self).__name__}.load_fields gave {split} values {tuple(values.shape)} and "
                                 f"masks {tuple(masks.shape)}; expected (N, {self.num_points}, {self.value_dim}), (N, "
                                 f"{self.num_points})")
        if self.batch_size > splits.train_values.shape[0]:
            raise ConfigError(f"data.batch_size={self.batch_size} exceeds the {splits.train_values.shape[0]} "
                              "training examples")
        self._splits = splits
        self._coords = self.grid()

    def _loaded(self) -> FieldSplits:
        self.setup()
        return self._splits

    @property
    def num_train(self) -> int:
        return self._loaded().train_values.shape[0]

    @property
    def num_val(self) -> int:
        return self._loaded().val_values.shape[0]

    @property
    def train_fields(self) -> dict[str, Tensor]:
        """The whole training split as one field batch."""
        splits = self._loaded()
        return field_batch(self._coords, splits.train_values, splits.train_masks, splits.train_labels)

    @property
    def val_fields(self) -> dict[str, Tensor]:
        """The whole held-out split as one field batch (what evaluation reconstructs and compares against)."""
        splits = self._loaded()
        return field_batch(self._coords, splits.val_values, splits.val_masks, splits.val_labels)

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        splits = self._loaded()
        dataset = FieldBatches(self._coords, getattr(splits, f"{split}_values"), getattr(splits, f"{split}_masks"),
                               getattr(splits, f"{split}_labels"))
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle,
                          collate_fn=_whole_batch, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def info(self) -> dict[str, Any]:
        """Plain values describing the data, for metrics.json."""
        return {"name": type(self).__name__, "coord_dim": self.coord_dim, "value_dim": self.value_dim,
                "grid_shape": list(self.grid_shape), "observed_fraction": self.observed_fraction,
                "num_train": self.num_train, "num_val": self.num_val, "batch_size": self.batch_size,
                "seed": self.seed}


class Signals1D(FieldDataModule):
    """Random Fourier series on ``num_points`` points of [−1, 1] (``data=signals1d``, the seed's toy problem).

    Each signal is f(x) = (1/n_terms) Σ_k a_k sin(π ν_k x + φ_k) with ν_k ~ U[frequency_min, frequency_max]
    (cycles per unit length, so ν cycles over half the domain), a_k ~ U[amplitude_min, amplitude_max] and
    φ_k ~ U[0, 2π): values stay within [−amplitude_max, amplitude_max]; ``n_terms=1`` gives pure sine waves.
    ``num_val`` of the ``num_signals`` signals are held out; signals and masks depend only on ``seed``.
    """

    coord_dim = 1
    value_dim = 1

    def __init__(self, num_signals: int = 2400, num_val: int = 400, num_points: int = 256, n_terms: int = 3,
                 frequency_min: float = 0.5, frequency_max: float = 4.0, amplitude_min: float = 0.5,
                 amplitude_max: float = 1.0, observed_fraction: float = 0.2, batch_size: int = 64,
                 eval_batch_size: int | None = None, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(observed_fraction, batch_size, eval_batch_size, num_workers, seed)
        self.num_signals = check_int("data.num_signals", num_signals, 2)
        self.num_val_signals = check_int("data.num_val", num_val, 1, self.num_signals - 1)
        self.grid_shape = (check_int("data.num_points", num_points, 2),)
        self.n_terms = check_int("data.n_terms", n_terms, 1)
        check_positive("data.frequency_min", frequency_min, strict=False)
        if not frequency_max >= frequency_min:
            raise ConfigError(f"data.frequency_max={frequency_max!r} is invalid; it must be >= data.frequency_min="
                              f"{frequency_min!r}")
        check_positive("data.amplitude_min", amplitude_min, strict=False)
        if not amplitude_max >= amplitude_min or amplitude_max <= 0:
            raise ConfigError(f"data.amplitude_max={amplitude_max!r} is invalid; it must be > 0 and >= "
                              f"data.amplitude_min={amplitude_min!r}")
        self.frequency_range = (float(frequency_min), float(frequency_max))
        self.amplitude_range = (float(amplitude_min), float(amplitude_max))

    def signals(self, x: Tensor, generator: torch.Generator, count: int) -> Tensor:
        """``count`` random Fourier series evaluated at the points ``x`` (P,): (count, P) float32."""
        def uniform(low: float, high: float) -> Tensor:
            return low + (high - low) * torch.rand(count, self.n_terms, 1, generator=generator, dtype=torch.float64)

        frequency = uniform(*self.frequency_range)
        amplitude = uniform(*self.amplitude_range)
        phase = uniform(0.0, 2 * math.pi)
        terms = amplitude * torch.sin(math.pi * frequency * x.double() + phase)
        return (terms.sum(dim=1) / self.n_terms).float()

    def load_fields(self) -> FieldSplits:
        generator = torch.Generator().manual_seed(self.seed)
        values = self.signals(self.grid()[:, 0], generator, self.num_signals)[..., None]
        masks = random_masks(self.num_signals, self.num_points, self.observed_fraction, generator)
        num_train = self.num_signals - self.num_val_signals
        return FieldSplits(values[:num_train], masks[:num_train], values[num_train:], masks[num_train:])

    def info(self) -> dict[str, Any]:
        return {**super().info(), "n_terms": self.n_terms, "frequency_range": list(self.frequency_range),
                "amplitude_range": list(self.amplitude_range)}
