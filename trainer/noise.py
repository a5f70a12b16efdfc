"""The forward diffusion of a training step: timesteps, noise, and the noisy latents the model sees."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from .config import TrainConfig


def noisy_latents(config: TrainConfig, scheduler: DDPMScheduler,
                  latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (noisy latents, the noise the target is built from, timesteps)."""
    # randn of a shape, not randn_like: the same seed gives the same noise whatever the latents' strides
    noise = torch.randn(latents.shape, dtype=latents.dtype, device=latents.device)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device)
    return scheduler.add_noise(latents, noise, timesteps), noise, timesteps
