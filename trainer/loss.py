"""The training loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from .config import TrainConfig


def training_loss(config: TrainConfig, scheduler: DDPMScheduler, prediction: torch.Tensor, target: torch.Tensor,
                  timesteps: torch.Tensor, is_reg: torch.Tensor) -> torch.Tensor:
    """Per-sample MSE in fp32; regularization samples weighted by prior_loss_weight (sd-scripts)."""
    per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    weights = torch.where(is_reg.to(per_sample.device), config.prior_loss_weight, 1.0)
    return (per_sample * weights).mean()
