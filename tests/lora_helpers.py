"""Test helper: plain LoRA on a model, without a config or a family."""

from __future__ import annotations

import torch

from trainer.adapters.layers import add_network
from trainer.adapters.lora import LORA
from trainer.adapters.spec import NetworkShape


def add_lora(model: torch.nn.Module, targets: list[str], dim: int, alpha: float) -> list[torch.nn.Parameter]:
    """Freeze the model, inject LoRA into the target modules and return the new trainable parameters."""
    return add_network(model, NetworkShape(LORA, dim, alpha), targets)
