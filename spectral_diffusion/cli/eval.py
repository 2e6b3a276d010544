"""``sd-eval``: metrics.json, report.md and figures for a set of samples (.npz or image folder), or for a
checkpoint it samples from first; returns ``optimized_metric``. The work is ``pipeline.evaluate``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from spectral_diffusion.cli import CONFIG_DIR, reports_config_errors, route_lightning_logs_through_hydra


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
@reports_config_errors("sd-eval")
def main(cfg: DictConfig) -> float | None:
    from spectral_diffusion.pipeline import evaluate

    route_lightning_logs_through_hydra()
    return evaluate(cfg).get("objective")


if __name__ == "__main__":
    main()
