"""cpu_offload_checkpointing, as sd-scripts': with gradient checkpointing the only activations a checkpointed
block keeps for the backward pass are its inputs; these wait in system RAM and return to the device when the
block is recomputed. Installed as diffusers' gradient_checkpointing_func (ModelMixin.enable_gradient_checkpointing).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

CPU = torch.device("cpu")


def offloading_checkpoint(block: torch.nn.Module, *args: Any) -> Any:
    """Run `block(*args)` checkpointed, its tensor inputs stored on the CPU. The copy to the CPU happens outside
    the checkpoint, so the device tensors are freed once the next block no longer needs them; the copy back is
    inside it, so it is redone in the backward pass and the gradients flow back through both copies."""
    device = next((tensor.device for tensor in _tensors(args)), CPU)

    def run(*stored: Any) -> Any:
        return block(*(_move(value, device, non_blocking=True) for value in stored))

    return checkpoint(run, *(_move(value, CPU) for value in args), use_reentrant=False)


def _move(value: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """A tensor, or the tensors in a tuple or list (Flux's rotary embedding is a pair), on `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=non_blocking)
    if isinstance(value, (tuple, list)):
        return type(value)(_move(item, device, non_blocking) for item in value)
    return value


def _tensors(args: tuple) -> list[torch.Tensor]:
    return [value for value in args if isinstance(value, torch.Tensor)]
