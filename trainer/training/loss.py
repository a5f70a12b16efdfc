"""The training loss: an element-wise loss type, then per-sample weights (sd-scripts' train_network order:
conditional_loss, mean per sample, prior_loss_weight, then min-SNR, v-pred scaling, v-pred-like loss,
debiased estimation; all of them are per-sample factors)."""

from __future__ import annotations

import math
from typing import Callable

import torch
from diffusers import DDPMScheduler

from trainer.config import TrainConfig
from trainer.training.noise import snr_table

# The loss types that take a per-sample threshold (huber_c and its schedule).
THRESHOLD_LOSSES = ("huber", "smooth_l1")
# sd-scripts limits SNR to 1000 in its SNR-scaled weights: at t=0 it is ~1000 already and would grow unbounded.
SNR_CAP = 1000.0


def training_loss(config: TrainConfig, scheduler: DDPMScheduler, prediction: torch.Tensor, target: torch.Tensor,
                  timesteps: torch.Tensor, is_reg: torch.Tensor) -> torch.Tensor:
    """Per-sample loss in fp32; regularization samples weighted by prior_loss_weight (sd-scripts)."""
    threshold = huber_threshold(config, scheduler, timesteps)
    per_element = elementwise_loss(config.loss_type, prediction.float(), target.float(), threshold)
    return weighted_mean(config, per_element, is_reg, timestep_weights(config, scheduler, timesteps))


def weighted_mean(config: TrainConfig, per_element: torch.Tensor, is_reg: torch.Tensor,
                  weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean per sample, times the per-sample weights and prior_loss_weight for regularization images, averaged."""
    per_sample = per_element.mean(dim=tuple(range(1, per_element.ndim)))
    if config.prior_loss_weight != 1.0:  # a factor of 1 would only add operations to every step
        per_sample = per_sample * torch.where(is_reg.to(per_sample.device), config.prior_loss_weight, 1.0)
    if weights is not None:
        per_sample = per_sample * weights.to(per_sample.device)
    return per_sample.mean()


def timestep_weights(config: TrainConfig, scheduler: DDPMScheduler, timesteps: torch.Tensor) -> torch.Tensor | None:
    """The product of the enabled SNR-based per-sample weights; None when none is on."""
    if not (config.min_snr_gamma or config.scale_v_pred_loss_like_noise_pred or config.v_pred_like_loss
            or config.debiased_estimation_loss):
        return None
    snr = snr_table(scheduler).to(timesteps.device)[timesteps]
    v_pred = scheduler.config.prediction_type == "v_prediction"
    capped = torch.clamp(snr, max=SNR_CAP)
    weights = torch.ones_like(snr)
    if config.min_snr_gamma:
        # Min-SNR-γ (Hang et al. 2023): epsilon loss × min(SNR, γ)/SNR; v loss × min(SNR, γ)/(SNR+1)
        weights = weights * torch.clamp(snr, max=config.min_snr_gamma) / (snr + 1 if v_pred else snr)
    if config.scale_v_pred_loss_like_noise_pred:  # prepare_scheduler allows it only for v-prediction models
        weights = weights * capped / (capped + 1)
    if config.v_pred_like_loss:  # loss + loss / scale × v_pred_like_loss, scale = SNR/(SNR+1)
        weights = weights * (1 + config.v_pred_like_loss * (capped + 1) / capped)
    if config.debiased_estimation_loss:
        weights = weights / (capped + 1 if v_pred else capped.sqrt())
    return weights


def huber_threshold(config: TrainConfig, scheduler: DDPMScheduler, timesteps: torch.Tensor) -> torch.Tensor | None:
    """sd-scripts' get_huber_threshold_if_needed: the per-sample huber_c of huber and smooth_l1."""
    if config.loss_type not in THRESHOLD_LOSSES:
        return None
    c, scale = config.huber_c, config.huber_scale
    if config.huber_schedule == "exponential":  # huber_scale at t=0 down to huber_c × huber_scale at t=T
        rate = -math.log(c) / scheduler.config.num_train_timesteps
        return torch.exp(-rate * timesteps.float()) * scale
    if config.huber_schedule == "snr":  # ~1 at low noise, falling to huber_c at high noise; no huber_scale
        alphas_cumprod = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
        sigmas = ((1.0 - alphas_cumprod) / alphas_cumprod) ** 0.5
        return (1 - c) / (1 + sigmas) ** 2 + c
    return torch.full(timesteps.shape, c * scale, device=timesteps.device)


def _huber(delta: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Pseudo-Huber, 2c(sqrt(δ² + c²) - c): ~δ² near 0, ~2c|δ| for large errors."""
    return 2 * c * (torch.sqrt(delta ** 2 + c ** 2) - c)


def _smooth_l1(delta: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """2(sqrt(δ² + c²) - c): ~δ²/c near 0, ~2|δ| for large errors."""
    return 2 * (torch.sqrt(delta ** 2 + c ** 2) - c)


# One implementation per loss_type of the schema (trainer/schema/loss.py LOSS_TYPES).
ELEMENTWISE: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l2": lambda delta, c: delta ** 2,
    "l1": lambda delta, c: delta.abs(),
    "huber": _huber,
    "smooth_l1": _smooth_l1,
}


def elementwise_loss(loss_type: str, prediction: torch.Tensor, target: torch.Tensor,
                     threshold: torch.Tensor | None) -> torch.Tensor:
    """sd-scripts' conditional_loss with reduction='none'; threshold is one huber_c per sample."""
    c = None if threshold is None else threshold.view(-1, *([1] * (prediction.ndim - 1)))
    return ELEMENTWISE[loss_type](prediction - target, c)
