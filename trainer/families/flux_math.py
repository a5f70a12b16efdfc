"""Flux.1 training math: which noise level to train, the noisy input, the target and the loss weighting.

Pure functions with sd-scripts' semantics (library/flux_train_utils.py: get_noisy_model_input_and_timesteps,
apply_model_prediction_type; the SD3 density and weighting come from diffusers.training_utils, the same code).

Conventions
- sigma in [0, 1] is the noise level: x_t = (1 - sigma) * x0 + sigma * noise (rectified flow, sigma 1 = pure noise).
- sd-scripts' "timesteps" are sigma * 1000 (what min/max_timestep, huber schedules and logs talk about).
- diffusers' FluxTransformer2DModel multiplies its `timestep` argument by 1000 itself (FluxPipeline passes t/1000),
  so pass `timestep=sigmas` (shape (B,), in [0, 1]) and `guidance=torch.full((B,), guidance_scale)` unscaled.
- The model predicts the velocity noise - x0 (flow_target).
"""

from __future__ import annotations

import math

import torch
from diffusers.training_utils import (
    compute_density_for_timestep_sampling,
    compute_loss_weighting_for_sd3,
)

from trainer.config.schema.flux import MODEL_PREDICTION_TYPES, TIMESTEP_SAMPLINGS, WEIGHTING_SCHEMES

NUM_TRAIN_TIMESTEPS = 1000
# Flux.1's resolution-dependent shift: mu goes linearly from 0.5 at 256 packed tokens to 1.15 at 4096.
BASE_SEQ_LEN, BASE_SHIFT, MAX_SEQ_LEN, MAX_SHIFT = 256, 0.5, 4096, 1.15


def image_seq_len(latent_height: int, latent_width: int) -> int:
    """Tokens of a packed Flux latent: 2x2 latent patches, so (h // 2) * (w // 2) of the unpacked latent."""
    return (latent_height // 2) * (latent_width // 2)


def flow_shift(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's fixed shift: shift * s / (1 + (shift - 1) * s). shift > 1 moves training towards more noise."""
    return sigmas * shift / (1 + (shift - 1) * sigmas)


def flux_shift_mu(seq_len: int) -> float:
    """Flux.1's mu for an image of seq_len packed tokens (sd-scripts' get_lin_function(y1=0.5, y2=1.15))."""
    slope = (MAX_SHIFT - BASE_SHIFT) / (MAX_SEQ_LEN - BASE_SEQ_LEN)
    return slope * seq_len + (BASE_SHIFT - slope * BASE_SEQ_LEN)


def time_shift(mu: float, sigmas: torch.Tensor) -> torch.Tensor:
    """Flux.1's exponential shift: e^mu / (e^mu + (1/s - 1)); larger images (larger mu) get more noise."""
    return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))


def schedule_sigmas(discrete_flow_shift: float) -> torch.Tensor:
    """The 1000 training sigmas of sd-scripts' FlowMatchEulerDiscreteScheduler, from 1 down to 0.001, shifted.

    Equal to diffusers' FlowMatchEulerDiscreteScheduler(shift=discrete_flow_shift).sigmas; built here because a
    Flux model folder's scheduler config turns on dynamic shifting, which sd-scripts does not use in training.
    """
    steps = torch.linspace(1, NUM_TRAIN_TIMESTEPS, NUM_TRAIN_TIMESTEPS).flip(0)
    return flow_shift(steps / NUM_TRAIN_TIMESTEPS, discrete_flow_shift)


def sample_sigmas(timestep_sampling: str, batch: int, *, sigmoid_scale: float, discrete_flow_shift: float,
                  image_seq_len: int, weighting_scheme: str, logit_mean: float, logit_std: float,
                  mode_scale: float, device: torch.device | str, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
    """One training noise level per image, shape (batch,), in [0, 1] (sd-scripts' timestep_sampling).

    sigma: u from weighting_scheme's density (uniform, logit_normal, mode), then the schedule_sigmas entry at
      index u * 1000 (index 0 = sigma 1: a high u means little noise). discrete_flow_shift shifts the schedule.
    uniform: s ~ U(0, 1). sigmoid: s = sigmoid(sigmoid_scale * N(0, 1)).
    shift: the sigmoid sample moved by flow_shift(discrete_flow_shift).
    flux_shift: the sigmoid sample moved by time_shift(mu) with mu from image_seq_len (image_seq_len()).
    Random numbers are drawn on the CPU (from `generator` when given) so a seed gives the same draw everywhere.
    """
    if timestep_sampling == "sigma":
        u = _density(batch, weighting_scheme, logit_mean, logit_std, mode_scale, generator)
        indices = (u * NUM_TRAIN_TIMESTEPS).long().clamp(0, NUM_TRAIN_TIMESTEPS - 1)  # u can round up to 1
        sigmas = schedule_sigmas(discrete_flow_shift)[indices]
    elif timestep_sampling == "uniform":
        sigmas = torch.rand(batch, generator=generator)
    elif timestep_sampling in ("sigmoid", "shift", "flux_shift"):
        sigmas = torch.sigmoid(sigmoid_scale * torch.randn(batch, generator=generator))
        if timestep_sampling == "shift":
            sigmas = flow_shift(sigmas, discrete_flow_shift)
        elif timestep_sampling == "flux_shift":
            sigmas = time_shift(flux_shift_mu(image_seq_len), sigmas)
    else:
        raise ValueError(f"timestep_sampling: unknown value {timestep_sampling!r}; use one of {TIMESTEP_SAMPLINGS}")
    return sigmas.to(device)


def _density(batch: int, weighting_scheme: str, logit_mean: float, logit_std: float, mode_scale: float,
             generator: torch.Generator | None) -> torch.Tensor:
    """diffusers' compute_density_for_timestep_sampling (sd-scripts has a copy of it), on the CPU."""
    if weighting_scheme not in WEIGHTING_SCHEMES:
        raise ValueError(f"weighting_scheme: unknown value {weighting_scheme!r}; use one of {WEIGHTING_SCHEMES}")
    return compute_density_for_timestep_sampling(weighting_scheme, batch, logit_mean=logit_mean,
                                                 logit_std=logit_std, mode_scale=mode_scale, device="cpu",
                                                 generator=generator)


def _expand(sigmas: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) sigmas as (B, 1, 1, ...) to broadcast over a latent batch."""
    return sigmas.to(like.device, like.dtype).view(-1, *([1] * (like.ndim - 1)))


def noisy_model_input(latents: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - sigma) * latents + sigma * noise, per image.

    For ip_noise_gamma pass noise + gamma * xi here and the plain noise to flow_target, as sd-scripts does.
    """
    s = _expand(sigmas, latents)
    return (1 - s) * latents + s * noise.to(latents.dtype)


def flow_target(latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """What a Flux transformer predicts: the velocity noise - latents (sd-scripts' target for every type)."""
    return noise - latents


def loss_weighting(weighting_scheme: str, sigmas: torch.Tensor) -> torch.Tensor:
    """Per-image loss weight, shape of sigmas: sigma_sqrt = sigma^-2, cosmap = 2 / (pi (1 - 2s + 2s^2)), else 1."""
    if weighting_scheme not in WEIGHTING_SCHEMES:
        raise ValueError(f"weighting_scheme: unknown value {weighting_scheme!r}; use one of {WEIGHTING_SCHEMES}")
    return compute_loss_weighting_for_sd3(weighting_scheme, sigmas)


def apply_prediction_type(kind: str, model_pred: torch.Tensor, noisy_input: torch.Tensor, sigmas: torch.Tensor,
                          weighting_scheme: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """sd-scripts' model_prediction_type applied to the (unpacked) model output; returns (pred, weighting).

    raw: the prediction as is. additive: prediction + noisy input.
    sigma_scaled: noisy_input - sigma * prediction, which for a perfect velocity is the clean latent x0, and the
      loss weighting of weighting_scheme, shape (B, 1, 1, ...), to multiply into the per-element loss.
    weighting is None for raw and additive (sd-scripts applies no weighting there). The loss target stays
    flow_target() for all three, as in sd-scripts.
    """
    if kind == "raw":
        return model_pred, None
    if kind == "additive":
        return model_pred + noisy_input, None
    if kind == "sigma_scaled":
        s = _expand(sigmas, model_pred)
        return model_pred * (-s) + noisy_input, loss_weighting(weighting_scheme, s)
    raise ValueError(f"model_prediction_type: unknown value {kind!r}; use one of {MODEL_PREDICTION_TYPES}")
