"""The forward diffusion of a training step: timesteps, noise, and the noisy latents the model sees.

sd-scripts' order (train_util.get_noise_noisy_latents_and_timesteps): noise_offset (with adaptive_noise_scale)
first, then multires noise, then the timesteps; ip_noise_gamma perturbs only what the model sees, never the
noise its target is built from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from trainer.common.errors import UserError
from trainer.config import TrainConfig
from trainer.training.draws import Draws


def noisy_latents(config: TrainConfig, scheduler: DDPMScheduler, latents: torch.Tensor,
                  draws: Draws) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (noisy latents, the noise the target is built from, timesteps). Every random number comes from `draws`
    (drawn for the global batch, this process's rows kept: draws.py)."""
    noise = training_noise(config, latents, draws)
    low, high = config.timestep_range
    timesteps = draws.randint(low, high, latents.device)
    seen = noise
    if config.ip_noise_gamma:
        strength = _strength(config.ip_noise_gamma, config.ip_noise_gamma_random_strength, draws, latents.device)
        seen = noise + strength * draws.randn(latents.shape[1:], latents)
    return scheduler.add_noise(latents, seen, timesteps), noise, timesteps


def training_noise(config: TrainConfig, latents: torch.Tensor, draws: Draws) -> torch.Tensor:
    noise = draws.randn(latents.shape[1:], latents)
    if config.noise_offset:
        strength = _strength(config.noise_offset, config.noise_offset_random_strength, draws, latents.device)
        noise = offset_noise(latents, noise, strength, config.adaptive_noise_scale, draws)
    if config.multires_noise_iterations:
        noise = pyramid_noise(noise, config.multires_noise_iterations, config.multires_noise_discount, draws)
    return noise


def offset_noise(latents: torch.Tensor, noise: torch.Tensor, offset: float | torch.Tensor,
                 adaptive_scale: float | None, draws: Draws) -> torch.Tensor:
    """One random constant per sample and channel (crosslabs' offset noise): teaches overall brightness."""
    if adaptive_scale:
        # images whose channels are far from zero on average (dark, bright, saturated) get a larger offset
        mean = latents.float().mean(dim=(2, 3), keepdim=True).abs()
        offset = torch.clamp(offset + adaptive_scale * mean, min=0.0)
    per_channel = draws.randn((latents.shape[1], 1, 1), latents)
    return noise + (offset * per_channel).to(noise.dtype)


def pyramid_noise(noise: torch.Tensor, iterations: int, discount: float, draws: Draws) -> torch.Tensor:
    """sd-scripts' pyramid_noise_like: noise upsampled from ever coarser grids (each shrunk by a random factor
    of 2-4 per level, weighted discount**level), rescaled to unit variance. Rescaled per sample, where sd-scripts
    divides by the whole batch's std (the same for batch 1): a sample's noise then does not depend on the other
    samples of its batch, nor on how processes split the batch."""
    _, channels, height, width = noise.shape
    noise = noise.clone()
    for level in range(iterations):
        factor = (2 + 2 * draws.uniform()) ** level  # a Python number: no device sync
        h, w = max(1, int(height / factor)), max(1, int(width / factor))
        coarse = draws.randn((channels, h, w), noise).float()
        noise += F.interpolate(coarse, size=(height, width), mode="bilinear").to(noise.dtype) * discount ** level
        if h == 1 or w == 1:
            break
    return noise / noise.std(dim=tuple(range(1, noise.ndim)), keepdim=True)


def prepare_scheduler(config: TrainConfig, scheduler: DDPMScheduler) -> list[str]:
    """Once after loading: fix the SNR table, apply zero_terminal_snr, check the options that depend on the
    model's prediction type. Returns warnings for the log; raises UserError for impossible combinations."""
    v_pred = scheduler.config.prediction_type == "v_prediction"
    if config.scale_v_pred_loss_like_noise_pred and not v_pred:
        raise UserError("scale_v_pred_loss_like_noise_pred: the model predicts noise (epsilon), not v",
                        "turn scale_v_pred_loss_like_noise_pred off, or set v_parameterization for a v model",
                        zh="scale_v_pred_loss_like_noise_pred：这个模型预测的是噪声（epsilon），不是 v",
                        hint_zh="请关掉 scale_v_pred_loss_like_noise_pred；如果是 v 模型，请设 v_parameterization")
    if config.v_pred_like_loss and v_pred:
        raise UserError("v_pred_like_loss: the model already predicts v", "remove v_pred_like_loss",
                        zh="v_pred_like_loss：这个模型本来就预测 v", hint_zh="请去掉 v_pred_like_loss")
    # sd-scripts computes the SNR weights before it rescales the betas: min_snr_gamma and debiased estimation
    # keep the original schedule's SNR, which also never reaches 0 (no division by zero at the last step).
    snr_table(scheduler)
    warnings = []
    if config.zero_terminal_snr:
        set_betas(scheduler, zero_terminal_snr_betas(scheduler.betas))
        if not v_pred:
            warnings.append("zero_terminal_snr with an epsilon (noise-predicting) model: results are unpredictable; "
                            "it is meant for v-prediction models")
    return warnings


def snr_table(scheduler: DDPMScheduler) -> torch.Tensor:
    """SNR(t) = alpha_bar / (1 - alpha_bar) for every timestep, computed once per scheduler (sd-scripts'
    prepare_scheduler_for_custom_training keeps it as all_snr)."""
    if not hasattr(scheduler, "all_snr"):
        alphas_cumprod = scheduler.alphas_cumprod.float()
        scheduler.all_snr = alphas_cumprod / (1.0 - alphas_cumprod)
    return scheduler.all_snr


def zero_terminal_snr_betas(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023 (arXiv 2305.08891), as sd-scripts: shift sqrt(alpha_bar) so the last step is 0 and
    rescale it so the first step keeps its value."""
    root = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)
    alphas_bar = root ** 2
    alphas = torch.cat([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1.0 - alphas


def set_betas(scheduler: DDPMScheduler, betas: torch.Tensor) -> None:
    """Only the training scheduler's tensors change; previews build their samplers from its config."""
    scheduler.betas = betas
    scheduler.alphas = 1.0 - betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, dim=0)


def _strength(value: float, random_strength: bool, draws: Draws, device: torch.device) -> float | torch.Tensor:
    """sd-scripts' *_random_strength: one uniform draw in [0, value) per (global) batch."""
    return draws.rand_per_batch(device) * value if random_strength else value
