"""Optimizers and learning-rate schedules."""

from __future__ import annotations

import torch
from diffusers.optimization import get_scheduler

from .config import TrainConfig


def make_optimizer(config: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    """groups: [{"name": ..., "params": [...], "lr": ...}] - one per trained model part."""
    fused = torch.cuda.is_available()  # torch's fused AdamW kernel is for CUDA tensors
    return torch.optim.AdamW(groups, lr=config.learning_rate, fused=fused or None)


def optimizer_name(optimizer: torch.optim.Optimizer) -> str:
    """As sd-scripts writes ss_optimizer: the class path."""
    cls = type(optimizer)
    return f"{cls.__module__}.{cls.__qualname__}"


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    name = config.lr_scheduler
    if name == "constant" and config.lr_warmup_steps:
        name = "constant_with_warmup"  # diffusers' plain constant schedule would ignore the warmup
    return get_scheduler(name, optimizer, num_warmup_steps=config.lr_warmup_steps,
                         num_training_steps=total_steps)
