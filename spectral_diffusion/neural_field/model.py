"""The networks of ``model=nf_latent``: sparse-observation encoders, the SIREN decoder and the latent denoiser.

An encoder maps the observed points of a field, (coordinate, value) pairs, to a latent z; the decoder maps
(z, any coordinates) to values, so a field is queried at any resolution; the denoiser is the diffusion
backbone on latents. ``NeuralFieldLatentModel`` holds the three and the learned null condition of
classifier-free guidance. Plain ``nn.Module``s: schedules and prediction types live in ``diffusion/``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from spectral_diffusion.models.layers import TimestepEmbedding
from spectral_diffusion.utils.validation import ConfigError, check_choice, check_int, check_range

ENCODERS = ("mlp", "transformer")
TRAINING_MODES = ("dual", "two_stage")


def check_latent_dim(value) -> int:
    return check_int("model.latent_dim", value, 1)


def check_omega(value, key: str = "model.omega_0") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{key}={value!r} is invalid; it must be a number > 0 (SIREN's ω0, 30 in Sitzmann et al.)")
    return float(value)


class FourierFeatures(nn.Module):
    """[x, sin(ω_k x), cos(ω_k x)] with ω_k = k π/2, k = 1..``num_frequencies``, per coordinate: the positional
    encoding of NeRF (Mildenhall et al. 2020, eq. 4) with linearly spaced frequencies, i.e. the Fourier-series
    basis of period 4, so a field on [−1, 1] needs no wrap-around and every frequency up to the highest has a
    feature (log spacing leaves 3π/2, 5π/2, ... without one)."""

    def __init__(self, coord_dim: int, num_frequencies: int) -> None:
        super().__init__()
        self.register_buffer("frequencies", 0.5 * math.pi * torch.arange(1, num_frequencies + 1, dtype=torch.float32))
        self.out_dim = coord_dim * (1 + 2 * num_frequencies)

    def forward(self, coords: Tensor) -> Tensor:
        angles = (coords[..., None] * self.frequencies).flatten(-2)
        return torch.cat([coords, torch.sin(angles), torch.cos(angles)], dim=-1)


def observation_features(features: FourierFeatures, coords: Tensor, values: Tensor) -> Tensor:
    """Per-observation input [γ(x), v, v ⊗ γ(x)]: the products make a mean over observations an estimate of the
    field's Fourier coefficients (∫ v(x) sin(2^k π x) dx), which a pooled encoder would otherwise have to
    learn to multiply out of its first layers."""
    encoded = features(coords)
    products = (values[..., :, None] * encoded[..., None, :]).flatten(-2)
    return torch.cat([encoded, values, products], dim=-1)


def gather_observed(coords: Tensor, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The observed points moved to the front and the rest cut: (B, K, d), (B, K, c), (B, K) mask, K = the
    largest number of observations in the batch. Encoders then spend nothing on unobserved points."""
    count = int(mask.sum(dim=1).max())
    if count == 0:
        raise ValueError("a field batch with no observed point at all cannot be encoded")
    order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)[:, :count]
    take = lambda tensor: torch.gather(tensor, 1, order[..., None].expand(-1, -1, tensor.shape[-1]))  # noqa: E731
    return take(coords), take(values), torch.gather(mask, 1, order)


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean over the observed tokens (B, K, F) → (B, F): symmetric in the observations, hence permutation
    invariant (Zaheer et al. 2017, Deep Sets)."""
    weights = mask.to(tokens.dtype)[..., None]
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def unit_rms(z: Tensor) -> Tensor:
    """z scaled to root-mean-square 1 per example: latents of unit variance per coordinate, as a Gaussian
    diffusion prior N(0, I) expects, and no collapse of their scale under the diffusion loss."""
    return z * torch.rsqrt(z.square().mean(dim=-1, keepdim=True) + 1e-6)


class MLPEncoder(nn.Module):
    """Per-observation MLP on ``observation_features`` (Fourier features of the coordinate, value, products),
    masked mean pooling, MLP head. The head also sees the pooled features themselves (a skip past the
    per-point MLP): their means are Fourier-coefficient estimates, informative from the first step."""

    def __init__(self, coord_dim: int, value_dim: int, latent_dim: int, hidden: int, layers: int,
                 num_frequencies: int) -> None:
        super().__init__()
        self.features = FourierFeatures(coord_dim, num_frequencies)
        blocks: list[nn.Module] = []
        width = width_in = (self.features.out_dim + 1) * (value_dim + 1) - 1
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        self.point_net = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Linear(hidden + width_in, hidden), nn.GELU(), nn.Linear(hidden, latent_dim))

    def forward(self, coords: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        coords, values, mask = gather_observed(coords, values, mask)
        features = observation_features(self.features, coords, values)
        pooled = torch.cat([masked_mean(self.point_net(features), mask), masked_mean(features, mask)], dim=-1)
        return unit_rms(self.head(pooled))


class TransformerEncoder(nn.Module):
    """Observation tokens (embedded ``observation_features``) → self-attention with a key padding mask (no
    order encoding, so permutation equivariant) → masked mean pooling → head: permutation invariant z."""

    def __init__(self, coord_dim: int, value_dim: int, latent_dim: int, hidden: int, layers: int,
                 num_frequencies: int, heads: int) -> None:
        super().__init__()
        if hidden % heads:
            raise ConfigError(f"model.encoder_hidden={hidden} is invalid for model.encoder_heads={heads}; "
                              "the width must be divisible by the number of heads")
        self.features = FourierFeatures(coord_dim, num_frequencies)
        self.embed = nn.Linear((self.features.out_dim + 1) * (value_dim + 1) - 1, hidden)
        layer = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=2 * hidden, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        # no nested-tensor fast path: it changes numerics between train and eval and warns on norm_first
        self.attention = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, latent_dim))

    def forward(self, coords: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        coords, values, mask = gather_observed(coords, values, mask)
        tokens = self.embed(observation_features(self.features, coords, values))
        tokens = self.attention(tokens, src_key_padding_mask=~mask)
        return unit_rms(self.head(masked_mean(tokens, mask)))


class SineLayer(nn.Module):
    """sin(ω0 (W x + b + shift)) with Sitzmann et al. 2020's initialisation (§3.2, supplement 1.5): weights
    U(−1/n, 1/n) in the first layer, U(−√(6/n)/ω0, √(6/n)/ω0) after it (n = fan-in)."""

    def __init__(self, in_features: int, out_features: int, omega_0: float, is_first: bool) -> None:
        super().__init__()
        self.omega_0 = omega_0
        self.linear = nn.Linear(in_features, out_features)
        bound = 1.0 / in_features if is_first else math.sqrt(6.0 / in_features) / omega_0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x: Tensor, shift: Tensor) -> Tensor:
        return torch.sin(self.omega_0 * (self.linear(x) + shift))


class SirenDecoder(nn.Module):
    """A SIREN (Sitzmann et al. 2020) on coordinates in [−1, 1], modulated by z through per-layer shifts
    (Dupont et al. 2022, functa: FiLM with β only). The shifts come from one linear map of z initialised like a
    hidden SIREN layer, so z never enters a layer's fan-in and the initialisation of the coordinate path is
    SIREN's own. The output layer is linear. Any number of query points per latent."""

    def __init__(self, coord_dim: int, value_dim: int, latent_dim: int, hidden: int, layers: int,
                 omega_0: float) -> None:
        super().__init__()
        self.hidden, self.num_layers = hidden, layers
        self.layers = nn.ModuleList(
            SineLayer(coord_dim if i == 0 else hidden, hidden, omega_0, is_first=i == 0) for i in range(layers))
        self.shifts = nn.Linear(latent_dim, hidden * layers)
        self.output = nn.Linear(hidden, value_dim)
        with torch.no_grad():
            bound = math.sqrt(6.0 / latent_dim) / omega_0
            self.shifts.weight.uniform_(-bound, bound)
            self.shifts.bias.zero_()
            bound = math.sqrt(6.0 / hidden) / omega_0
            self.output.weight.uniform_(-bound, bound)

    def forward(self, z: Tensor, coords: Tensor) -> Tensor:
        """Values (B, N, value_dim) at ``coords`` (B, N, d) or one shared (N, d) grid, for latents z (B, D)."""
        if coords.ndim == 2:
            coords = coords.expand(z.shape[0], *coords.shape)
        shifts = self.shifts(z).view(z.shape[0], 1, self.num_layers, self.hidden)
        h = coords
        for i, layer in enumerate(self.layers):
            h = layer(h, shifts[:, :, i])
        return self.output(h)


class LatentDenoiser(nn.Module):
    """The diffusion backbone on latents: an MLP of residual SiLU blocks on [z_t, condition] with a sinusoidal
    time embedding (DDPM's, ``models.layers.TimestepEmbedding``) added in every block. Outputs the prediction
    type's quantity, shaped like z_t."""

    def __init__(self, latent_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.time = TimestepEmbedding(hidden, hidden)
        self.input = nn.Linear(2 * latent_dim, hidden)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"time": nn.Linear(hidden, hidden), "norm": nn.LayerNorm(hidden),
                           "mlp": nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))})
            for _ in range(layers))
        self.output = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, latent_dim))

    def forward(self, z_t: Tensor, noise_level: Tensor, condition: Tensor) -> Tensor:
        time = self.time(noise_level)
        h = self.input(torch.cat([z_t, condition], dim=-1))
        for block in self.blocks:
            h = h + block["mlp"](block["norm"](h + block["time"](time)))
        return self.output(h)


class NeuralFieldLatentModel(nn.Module):
    """``model=nf_latent``: encoder → z (``latent_dim``) → SIREN decoder, and the latent denoiser.

    ``coord_dim``/``value_dim`` come from the data. ``condition_dropout`` is the probability that training
    replaces a condition (the encoding of other observations of the same field) with the learned null
    condition: 0 trains a purely conditional model, 1 a purely unconditional one; classifier-free guidance
    needs 0 < p < 1. ``training_mode`` ``dual`` adds ``diffusion_weight`` × the diffusion loss to the reconstruction
    loss (the seed's dual loss) once ``autoencoder_steps`` steps of reconstruction alone are done;
    ``two_stage`` trains the autoencoder alone for ``autoencoder_steps`` steps, then only the denoiser on the
    frozen encoder's latents. ``recon_points``: grid points per field in a training step's reconstruction loss,
    a fresh uniform draw each step (an unbiased estimate of the all-point MSE at a fraction of the decoder's
    cost); None uses every point.
    """

    def __init__(self, coord_dim: int, value_dim: int, latent_dim: int = 64, encoder: str = "mlp",
                 encoder_hidden: int = 128, encoder_layers: int = 3, encoder_heads: int = 4,
                 num_frequencies: int = 6, decoder_hidden: int = 128, decoder_layers: int = 4,
                 omega_0: float = 30.0, denoiser_hidden: int = 256, denoiser_layers: int = 3,
                 condition_dropout: float = 0.2, training_mode: str = "dual", autoencoder_steps: int = 0,
                 diffusion_weight: float = 1.0, recon_points: int | None = None) -> None:
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        self.omega_0 = check_omega(omega_0)
        self.encoder_name = check_choice("model.encoder", encoder, ENCODERS)
        hidden = check_int("model.encoder_hidden", encoder_hidden, 1)
        layers = check_int("model.encoder_layers", encoder_layers, 1)
        frequencies = check_int("model.num_frequencies", num_frequencies, 0)
        if encoder == "mlp":
            self.encoder = MLPEncoder(coord_dim, value_dim, latent_dim, hidden, layers, frequencies)
        else:
            self.encoder = TransformerEncoder(coord_dim, value_dim, latent_dim, hidden, layers, frequencies,
                                              check_int("model.encoder_heads", encoder_heads, 1))
        self.decoder = SirenDecoder(coord_dim, value_dim, latent_dim,
                                    check_int("model.decoder_hidden", decoder_hidden, 1),
                                    check_int("model.decoder_layers", decoder_layers, 1), self.omega_0)
        self.denoiser = LatentDenoiser(latent_dim, check_int("model.denoiser_hidden", denoiser_hidden, 1),
                                       check_int("model.denoiser_layers", denoiser_layers, 0))
        self.null_condition = nn.Parameter(torch.zeros(latent_dim))
        self.condition_dropout = float(check_range("model.condition_dropout", condition_dropout, 0.0, 1.0))
        self.training_mode = check_choice("model.training_mode", training_mode, TRAINING_MODES)
        self.autoencoder_steps = check_int("model.autoencoder_steps", autoencoder_steps, 0)
        if self.training_mode == "two_stage" and self.autoencoder_steps == 0:
            raise ConfigError("model.autoencoder_steps=0 is invalid with model.training_mode=two_stage: the first "
                              "stage needs steps (e.g. model.autoencoder_steps=1000)")
        if isinstance(diffusion_weight, bool) or not isinstance(diffusion_weight, (int, float)) \
                or diffusion_weight <= 0:
            raise ConfigError(f"model.diffusion_weight={diffusion_weight!r} is invalid; it must be a number > 0")
        self.diffusion_weight = float(diffusion_weight)
        self.recon_points = None if recon_points is None else check_int("model.recon_points", recon_points, 1)

    def encode(self, coords: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        """z (B, latent_dim) from the observed points (``mask``) of a field batch."""
        return self.encoder(coords, values, mask)

    def decode(self, z: Tensor, coords: Tensor) -> Tensor:
        """Values (B, N, value_dim) of the fields z at any coordinates (B, N, d) or (N, d) in [−1, 1]."""
        return self.decoder(z, coords)

    def null_conditions(self, batch: int) -> Tensor:
        """The learned null condition ∅ for a batch: (batch, latent_dim)."""
        return self.null_condition.expand(batch, -1)

    def denoise_output(self, z_t: Tensor, noise_level: Tensor, condition: Tensor) -> Tensor:
        return self.denoiser(z_t, noise_level, condition)
