"""The ``evaluation`` config group (``conf/evaluation/default.yaml``) as one validated object, read by ``sd-train``
and ``sd-eval``; and the metric battery's options under any config key."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spectral_diffusion.metrics.battery import BatteryConfig, config_options
from spectral_diffusion.utils.validation import ConfigError, check_bool, check_int, is_int

KEY = "evaluation"


def name_battery_key(text: str, key: str) -> str:
    """The battery names its options ``battery.<option>``; say where they live in this config instead."""
    return re.sub(r"^battery\b(?!\.)", key, re.sub(r"\bbattery\.", f"{key}.", text))


def battery_config(options: Any, key: str, image_shape: tuple[int, int, int] | None = None) -> BatteryConfig:
    """``metrics.battery.BatteryConfig`` from the config node ``key`` (validated, and for ``image_shape`` when
    given); its ConfigError is re-raised naming ``key``."""
    try:
        config = BatteryConfig.from_config(options)
        if image_shape is not None:
            config.check_image_shape(tuple(image_shape))
    except ConfigError as error:
        raise ConfigError(name_battery_key(str(error), key)) from None
    return config


@dataclass
class EvaluationConfig:
    """What the evaluation after training (``sd-train``) and ``sd-eval`` do; every option checked on construction.

    ``num_samples`` generated images (sd-eval with ``samples=``: every image given) are compared with the held-out
    split; ``batch_size`` images per sampling and feature batch; KID on subsets of ``kid_subset_size`` features
    (None: 1000); sample i drawn from generator ``seed + i`` (also the noise of the per-timestep loss);
    ``grid_size`` images in samples.png and the generated-vs-real figure; the metric ``battery`` on or off with its
    ``battery_options`` (``BatteryConfig``); the per-timestep held-out loss at ``timestep_bins`` times (0: off);
    ``bootstrap`` resamples (at least 10; None: no intervals) for confidence intervals at ``level`` (in (0, 1)) on
    every metric that has one (``metrics.bootstrap``), seeded by ``seed``.
    """

    num_samples: int
    batch_size: int
    kid_subset_size: int | None
    seed: int
    grid_size: int
    battery: bool
    timestep_bins: int
    bootstrap: int | None
    level: float
    battery_options: BatteryConfig | Mapping | None = None

    def __post_init__(self) -> None:
        self.num_samples = check_int(f"{KEY}.num_samples", self.num_samples, 2)
        self.batch_size = check_int(f"{KEY}.batch_size", self.batch_size, 1)
        if self.kid_subset_size is not None:
            self.kid_subset_size = check_int(f"{KEY}.kid_subset_size", self.kid_subset_size, 2)
        self.seed = check_int(f"{KEY}.seed", self.seed)
        self.grid_size = check_int(f"{KEY}.grid_size", self.grid_size, 1)
        check_bool(f"{KEY}.battery", self.battery)
        self.timestep_bins = check_int(f"{KEY}.timestep_bins", self.timestep_bins, 0)
        if self.bootstrap is not None:
            self.bootstrap = check_int(f"{KEY}.bootstrap", self.bootstrap, 10)
        if not (is_int(self.level) or isinstance(self.level, float)) or not 0 < self.level < 1:
            raise ConfigError(f"{KEY}.level={self.level!r} is invalid; it must lie strictly inside (0, 1)")
        self.level = float(self.level)
        self.battery_options = battery_config(self.battery_options, f"{KEY}.battery_options")

    @classmethod
    def from_config(cls, node: EvaluationConfig | Mapping) -> EvaluationConfig:
        """From the ``evaluation`` node (a DictConfig or dict; ``_target_`` ignored) or an EvaluationConfig."""
        if isinstance(node, EvaluationConfig):
            return node
        options = config_options(node, cls, KEY)
        known = [option.name for option in dataclasses.fields(cls)]
        missing = [key for key in known if key not in options and key != "battery_options"]
        if missing:
            raise ConfigError(f"{KEY} lacks the options {missing}")
        return cls(**options)

    @property
    def battery_groups(self) -> list[str]:
        """The battery groups that run (none when the battery is off)."""
        return list(self.battery_options.groups) if self.battery else []

    def check_image_shape(self, image_shape: tuple[int, int, int]) -> None:
        """The battery options that depend on the image size (C, H, W), when the battery runs."""
        if self.battery:
            battery_config(self.battery_options, f"{KEY}.battery_options", image_shape)
