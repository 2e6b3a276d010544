"""``sd-distill``: a few-step student (reflow, progressive or consistency distillation) from an ``sd-train``
checkpoint, trained, evaluated and recorded like an ``sd-train`` run; returns ``optimized_metric``. The work is
``spectral_diffusion.distill.run.distill``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from spectral_diffusion.cli import CONFIG_DIR, reports_config_errors, route_lightning_logs_through_hydra


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="distill")
@reports_config_errors("sd-distill")
def main(cfg: DictConfig) -> float | None:
    from spectral_diffusion.distill.run import distill

    route_lightning_logs_through_hydra()
    return distill(cfg).get("objective")


if __name__ == "__main__":
    main()
