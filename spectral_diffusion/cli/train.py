"""``sd-train``: compose the config, train, sample, evaluate; returns ``optimized_metric``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from spectral_diffusion.cli import CONFIG_DIR, reports_config_errors, route_lightning_logs_through_hydra


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
@reports_config_errors("sd-train")
def main(cfg: DictConfig) -> float | None:
    from spectral_diffusion.pipeline import train

    route_lightning_logs_through_hydra()

    metrics = train(cfg)
    return metrics.get("objective")


if __name__ == "__main__":
    main()
