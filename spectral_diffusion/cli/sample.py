"""``sd-sample``: samples from a trained checkpoint into ``samples.png`` and ``samples.npz``."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from spectral_diffusion.cli import CONFIG_DIR, reports_config_errors

log = logging.getLogger(__name__)


def sample(cfg: DictConfig) -> Path:
    import torch

    from spectral_diffusion.diffusion.guidance import instantiate_sampler
    from spectral_diffusion.diffusion.rotation import rotation_angles, sample_rotations
    from spectral_diffusion.diffusion.samplers import validate_sampler
    from spectral_diffusion.pipeline import load_module
    from spectral_diffusion.utils.progress import progress_bar
    from spectral_diffusion.utils.images import save_grid, save_samples_npz
    from spectral_diffusion.utils.validation import ConfigError, check_bool, check_choice

    if int(cfg.n) < 1:
        raise ConfigError(f"n={cfg.n!r} is invalid; it must be an integer >= 1")
    device = check_choice("device", cfg.device, ["auto", "cpu", "cuda"])
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    module = load_module(cfg.ckpt_path).to(device)
    from spectral_diffusion.neural_field import pipeline as neural_field
    from spectral_diffusion.neural_field.module import NeuralFieldModule

    if isinstance(module, NeuralFieldModule):
        return neural_field.sample(cfg, module)
    if cfg.get("resolution") is not None:
        raise ConfigError(f"resolution={cfg.resolution!r} is the query grid of a neural-field checkpoint; this "
                          "checkpoint generates images of a fixed size, so leave it null")
    sampler = instantiate_sampler(cfg.sampler) if cfg.get("sampler") else module.sampler
    validate_sampler(sampler, module.process)
    angles = rotation_angles(cfg.rotation.angles, cfg.rotation.frames) if cfg.get("rotation") else None
    if angles is not None:
        report = sample_rotations(module, sampler, angles, cfg.paths.output_dir, count=int(cfg.n),
                                  seed=int(cfg.seed), every_step=check_bool("rotation.every_step",
                                                                            cfg.rotation.every_step),
                                  use_ema=bool(cfg.use_ema))
        log.info("rotation frames in %s; frame-to-frame PSNR %.2f dB", report["gif"], report["frame_psnr_mean"])
        return Path(report["strip"])
    samples = module.generate(int(cfg.n), sampler=sampler, seed=int(cfg.seed), batch_size=int(cfg.batch_size),
                              use_ema=bool(cfg.use_ema), progress=progress_bar("sampling"))
    output_dir = Path(cfg.paths.output_dir)
    save_samples_npz(samples, output_dir / "samples.npz", seed=int(cfg.seed))
    grid = save_grid(samples, output_dir / "samples.png")
    log.info("wrote %d samples to %s", len(samples), output_dir)
    return grid


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="sample")
@reports_config_errors("sd-sample")
def main(cfg: DictConfig) -> None:
    sample(cfg)


if __name__ == "__main__":
    main()
