"""Class-conditional image models with classifier-free guidance: the class embedding and its null class, condition
dropout, guided sampling through every sampler (scale 0 / 1 identities), the bad-input errors, and a tiny
``data.conditional=true`` run through sd-train's pipeline and sd-sample's command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from spectral_diffusion.cli import CONFIG_DIR
from spectral_diffusion.diffusion.guidance import instantiate_sampler
from spectral_diffusion.diffusion.samplers import ddim
from spectral_diffusion.evaluation.names import describe
from spectral_diffusion.models import ClassEmbedding, UNet, UNetAliasFree, UNetHybrid, UNetSpectral
from spectral_diffusion.pipeline import build, load_module, train
from spectral_diffusion.utils.random import sample_generators
from spectral_diffusion.utils.validation import ConfigError
from .conftest import REPO_ROOT, cli_env, compose_train

SMALL = dict(in_channels=1, image_size=8, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
             attention_resolutions=())
MODELS = [(UNet, {"mid_attention": False}), (UNetAliasFree, {"version": 3}), (UNetSpectral, {}), (UNetHybrid, {})]


def perturbed(model: torch.nn.Module, generator: torch.Generator | None = None) -> torch.nn.Module:
    """Every parameter moved by seeded noise: the zero-initialised output conv would hide any conditioning."""
    generator = generator or torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model


@pytest.mark.parametrize("cls, options", MODELS, ids=lambda value: getattr(value, "__name__", ""))
def test_conditional_output_depends_on_the_label_and_the_null_class_differs(cls, options):
    model = perturbed(cls(**SMALL, **options, num_classes=3)).eval()
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0)).expand(4, -1, -1, -1)
    out = model(x, torch.full((4,), 300.0), torch.tensor([0, 1, 2, 3]))  # 3 = the null class
    for i in range(4):
        for j in range(i):
            assert (out[i] - out[j]).abs().max() > 1e-4, (i, j)
    assert model.class_embedding.embedding.num_embeddings == 4
    with pytest.raises(ValueError, match="needs class labels"):
        model(x, torch.full((4,), 300.0))
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        model(x, torch.full((4,), 300.0), torch.tensor([0, 1, 2, 4]))


# (state-dict entries, parameters, sum and |.| sum of the output) of the 8x8 builds below, measured on the code
# before class conditioning existed (commit 315cc92): an unconditional build must not move.
GOLDEN = {UNet: (104, 40489, 10.955128425732255, 22.08055512327701),
          UNetSpectral: (183, 92498, -0.924789029173553, 33.068563972599804)}


@pytest.mark.parametrize("cls, options", [(UNet, {"mid_attention": False}), (UNetSpectral, {})],
                         ids=["UNet", "UNetSpectral"])
def test_unconditional_build_is_unchanged_and_the_embedding_only_adds(cls, options):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    plain = perturbed(cls(**SMALL, **options), generator).eval()
    x = torch.randn(2, 1, 8, 8, generator=generator)
    out = plain(x, torch.tensor([10.0, 700.0])).double()
    entries, parameters, total, absolute = GOLDEN[cls]
    assert len(plain.state_dict()) == entries and sum(p.numel() for p in plain.parameters()) == parameters
    assert out.sum().item() == pytest.approx(total, rel=1e-5) and out.abs().sum().item() == pytest.approx(absolute,
                                                                                                         rel=1e-5)
    # conditional: exactly one more entry; with a zero class embedding it is the unconditional network
    conditional = cls(**SMALL, **options, num_classes=5).eval()
    assert set(conditional.state_dict()) - set(plain.state_dict()) == {"class_embedding.embedding.weight"}
    missing, unexpected = conditional.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["class_embedding.embedding.weight"] and not unexpected
    with torch.no_grad():
        conditional.class_embedding.embedding.weight.zero_()
    torch.testing.assert_close(conditional(x, torch.tensor([10.0, 700.0]), torch.tensor([1, 5])).double(), out)


def test_condition_dropout_replaces_labels_at_its_rate_in_training_only():
    embedding = ClassEmbedding(10, 8, condition_dropout=0.3)
    labels = torch.arange(40_000) % 10
    torch.manual_seed(0)
    dropped = embedding.train().drop(labels)
    null = dropped == 10
    assert abs(null.double().mean().item() - 0.3) < 0.01
    assert torch.equal(dropped[~null], labels[~null])
    assert torch.equal(embedding.eval().drop(labels), labels)
    assert torch.equal(ClassEmbedding(10, 8, condition_dropout=0.0).train().drop(labels), labels)


@pytest.fixture
def conditional_module(tmp_path, cache_dir):
    """A tiny conditional module on 8x8 digits (10 classes), weights perturbed so the label matters."""
    def make(*overrides):
        cfg = compose_train(["debug=default", "data.conditional=true", "sampler.steps=4", *overrides], tmp_path,
                            cache_dir)
        module = build(cfg).module
        perturbed(module.ema.module)
        return module
    return make


def test_the_module_drops_each_training_label_once_and_never_in_evaluation(conditional_module):
    module = conditional_module("model.condition_dropout=0.5", "self_conditioning=1.0")
    seen = []
    forward = module.model.forward
    module.model.forward = lambda x, t, labels: seen.append(labels.clone()) or forward(x, t, labels)
    images, labels = torch.zeros(2000, 1, 8, 8), torch.arange(2000) % 10
    module.train()
    module._common_step(images, class_labels=labels)
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])  # self-conditioning pass and main pass agree
    assert abs((seen[0] == 10).double().mean().item() - 0.5) < 0.05
    seen.clear()
    module.eval()
    module._common_step(images, class_labels=labels)
    assert all(torch.equal(batch, labels) for batch in seen)


def guided(module, scale, **overrides):
    node = OmegaConf.create(module.config["sampler"])
    node.guidance_scale = scale
    for key, value in overrides.items():
        node[key] = value
    return instantiate_sampler(node)


@pytest.mark.parametrize("self_conditioning", [0.0, 0.5])
def test_scale_zero_is_the_null_class_and_scale_one_plain_conditional_exactly(conditional_module, self_conditioning):
    module = conditional_module(f"self_conditioning={self_conditioning}")
    null = module.num_classes
    unconditional = module.generate(5, sampler=guided(module, 0.0), seed=3, class_labels=7)
    all_null = module.generate(5, sampler=guided(module, 1.0), seed=3, class_labels=null)
    assert torch.equal(unconditional, all_null)

    conditional = module.generate(5, sampler=guided(module, 1.0), seed=3, class_labels=7)
    x_T = module.process.prior((5, 1, 8, 8), sample_generators(3, 0, 5))
    denoise = module.self_conditioned_denoiser()
    plain = ddim(lambda x, t: denoise(x, t, torch.full((len(x),), 7)), module.process, x_T, 4).clamp(-1, 1)
    assert torch.equal(conditional, plain)
    assert (conditional - unconditional).abs().max() > 1e-3
    stronger = module.generate(5, sampler=guided(module, 3.0), seed=3, class_labels=7)
    assert (stronger - conditional).abs().max() > 1e-3


def test_labels_cycle_and_a_sample_does_not_depend_on_batching(conditional_module):
    module = conditional_module()
    sampler = guided(module, 2.0)
    whole = module.generate(13, sampler=sampler, seed=0, batch_size=13)
    assert module.last_sampling_info["class_labels"] == [i % 10 for i in range(13)]
    split = module.generate(13, sampler=sampler, seed=0, batch_size=4)
    torch.testing.assert_close(whole, split)
    one = module.generate(1, sampler=sampler, seed=12, class_labels=2)  # sample 12 of seed 0 is seed 12's first
    torch.testing.assert_close(one[0], whole[12])


@pytest.mark.parametrize("name", sorted(path.stem for path in (CONFIG_DIR / "sampler").glob("*.yaml")))
def test_every_sampler_runs_guided(conditional_module, name):
    module = conditional_module(f"sampler={name}", "sampler.steps=3")
    samples = module.generate(4, sampler=guided(module, 2.0), seed=0, class_labels=torch.tensor([0, 1, 1, 9]))
    assert samples.shape == (4, 1, 8, 8) and torch.isfinite(samples).all()
    plain = module.generate(4, sampler=guided(module, 1.0), seed=0, class_labels=torch.tensor([0, 1, 1, 9]))
    assert (samples - plain).abs().max() > 1e-4  # guidance reached the network


def test_bad_input_names_its_key(conditional_module, tmp_path, cache_dir):
    def build_with(*overrides):
        return build(compose_train(["debug=default", *overrides], tmp_path, cache_dir))

    with pytest.raises(ConfigError, match=r"data\.conditional"):
        build_with("data=random_fields", "data.source.image_size=8", "data.conditional=true")
    with pytest.raises(ConfigError, match=r"data\.conditional=true needs a class-conditional backbone"):
        build_with("data.conditional=true", "model._target_=torch.nn.Identity")
    with pytest.raises(ConfigError, match=r"sampler\.guidance_scale"):
        build_with("data.conditional=true", "sampler.guidance_scale=-1")
    with pytest.raises(ConfigError, match=r"sampler\.guidance_scale=2.0 needs a conditional model"):
        build_with("sampler.guidance_scale=2")
    with pytest.raises(ConfigError, match=r"model\.condition_dropout=0"):
        build_with("data.conditional=true", "model.condition_dropout=0", "sampler.guidance_scale=2")
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match=r"model\.condition_dropout"):
            build_with("data.conditional=true", f"model.condition_dropout={bad}")

    module = conditional_module("model.condition_dropout=0")
    assert module.generate(2, sampler=guided(module, 1.0), class_labels=4).shape == (2, 1, 8, 8)  # no guidance: fine
    with pytest.raises(ConfigError, match=r"model\.condition_dropout=0"):
        module.generate(2, sampler=guided(module, 1.5))
    for label in (11, -1):
        with pytest.raises(ConfigError, match=r"class_label=.* outside the data's classes 0\.\.9"):
            module.generate(2, class_labels=label)
    for label in (2.5, "three"):
        with pytest.raises(ConfigError, match="class_label"):
            module.generate(2, class_labels=label)
    unconditional = build_with().module
    with pytest.raises(ConfigError, match=r"class_label=3 needs a class-conditional model"):
        unconditional.generate(2, class_labels=3)


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory, cache_dir):
    """One tiny ``data.conditional=true`` sd-train run (8x8 digits, 30 steps, guidance scale 2)."""
    tmp_path = tmp_path_factory.mktemp("conditional_run")
    cfg = compose_train(["debug=default", "data.conditional=true", "sampler.guidance_scale=2",
                         "evaluation.battery=false"], tmp_path, cache_dir)
    return cfg, train(cfg), cache_dir


def test_sd_train_conditional_reports_class_accuracy_and_checkpoints(conditional_run):
    cfg, metrics, _ = conditional_run
    run_dir = Path(cfg.paths.output_dir)
    assert 0.0 <= metrics["class_accuracy"] <= 1.0
    assert metrics["class_accuracy_ci_low"] <= metrics["class_accuracy"] <= metrics["class_accuracy_ci_high"]
    assert json.loads((run_dir / "metrics.json").read_text())["class_accuracy"] == metrics["class_accuracy"]
    assert describe("class_accuracy").startswith("fraction of a class-conditional model's")
    module = load_module(run_dir / "checkpoints" / "last.ckpt")  # weights_only load
    assert module.num_classes == 10 and module.class_embedding.condition_dropout == 0.1
    assert module.config["data"]["conditional"] is True
    samples = module.generate(3, class_labels=5)
    assert samples.shape == (3, 1, 8, 8) and module.last_sampling_info["class_labels"] == [5, 5, 5]


def run_sample(ckpt: Path, out: Path, cache_dir: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "spectral_diffusion.cli.sample", f"ckpt_path={ckpt}", "sampler=ddim",
               "sampler.steps=3", f"hydra.run.dir={out}", *args]
    return subprocess.run(command, cwd=REPO_ROOT, env=cli_env(cache_dir), capture_output=True, text=True,
                          timeout=120)


def test_sd_sample_class_label_with_guidance(conditional_run, tmp_path):
    cfg, _, cache_dir = conditional_run
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    result = run_sample(ckpt, tmp_path / "three", cache_dir, "class_label=3", "sampler.guidance_scale=2", "n=6")
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(tmp_path / "three" / "samples.npz") as data:
        assert data["images"].shape == (6, 1, 8, 8)
    module = load_module(ckpt)
    expected = module.generate(6, sampler=guided(module, 2.0, steps=3), class_labels=3)
    with np.load(tmp_path / "three" / "samples.npz") as data:  # the CLI drew class 3 at scale 2 from seed 0
        torch.testing.assert_close(torch.from_numpy(data["images"]), expected)


@pytest.mark.slow  # two more CLI start-ups (~20 s each on the shared CPU)
def test_sd_sample_refuses_a_bad_class_label_or_scale_before_sampling(conditional_run, tmp_path):
    cfg, _, cache_dir = conditional_run
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    for arg, key in (("class_label=10", "class_label"), ("sampler.guidance_scale=-0.5", "sampler.guidance_scale")):
        bad = run_sample(ckpt, tmp_path / "bad", cache_dir, arg)
        assert bad.returncode != 0 and key in bad.stderr, bad.stderr[-2000:]
        assert "Traceback" not in bad.stderr
