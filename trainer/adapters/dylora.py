"""DyLoRA (sd-scripts' networks.dylora): a LoRA whose every prefix of ranks is trained, as hooks on peft's layers.

Each training forward of a layer draws a rank b from unit, 2·unit, ..., dim. The layer then uses only its first b
ranks (rows of lora_down, columns of lora_up), and only the newest block of unit ranks, [b - unit, b), learns:
the ones below are frozen for that forward, as sd-scripts freezes them. Like sd-scripts, the output is scaled by
sqrt(dim / b) so that a low rank is not drowned out. Every prefix of the ranks is thus trained to work on its own,
and the saved file (a normal kohya LoRA at full rank) can be cut to any multiple of unit. In eval mode (previews,
the saved file) all ranks are used without the extra factor.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from trainer.adapters.lora import LoraType
from trainer.adapters.spec import Evidence, FileFacts, set_keys
from trainer.common.errors import RuleError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DyLoRA(LoraType):
    def check(self, config: Any) -> None:
        if config.network_dim % config.unit:
            raise RuleError(f"unit: network_dim {config.network_dim} must be a multiple of unit {config.unit}",
                            "unit", "network_dim",
                            zh=f"unit：network_dim {config.network_dim} 必须是 unit {config.unit} 的整数倍")
        dropouts = set_keys(config, "network_dropout", "rank_dropout", "module_dropout")
        if dropouts:
            raise RuleError("network_dropout / rank_dropout / module_dropout: DyLoRA trains without dropouts "
                            "(as sd-scripts); remove them", *dropouts, "network_type",
                            zh="network_dropout / rank_dropout / module_dropout：DyLoRA 训练时不用 dropout"
                            "（与 sd-scripts 相同）；请去掉它们")

    def after_injection(self, module: torch.nn.Module, config: Any) -> None:
        super().after_injection(module, config)
        add_dylora(module, config.unit)

    def recognises(self, facts: FileFacts) -> Evidence:
        return Evidence.MODULE if "dylora" in facts.module else Evidence.NONE


DYLORA = DyLoRA("dylora", "DyLoRA", "networks.dylora", own_keys=("unit",), nested_ranks=True)


def add_dylora(model: torch.nn.Module, unit: int) -> None:
    from trainer.adapters.layers import ADAPTER, lora_layers

    for layer in lora_layers(model).values():
        down, up = layer.lora_A[ADAPTER], layer.lora_B[ADAPTER]
        state = {"rank": None}  # the rank drawn for this forward; lora_up reads it
        layer.dylora_state = state
        down.register_forward_hook(partial(_cut_down, state=state, dim=layer.r[ADAPTER], unit=unit))
        up.register_forward_hook(partial(_cut_up, state=state, unit=unit))


def _rank_axis(output: torch.Tensor) -> int:
    return 1 if output.dim() == 4 else -1  # Conv2d LoRA: ranks are channels; Linear: the last dim


def _mask(output: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    import torch

    axis = _rank_axis(output)
    shape = [1] * output.dim()
    shape[axis] = output.shape[axis]
    index = torch.arange(output.shape[axis], device=output.device)
    return ((index >= start) & (index < stop)).to(output.dtype).view(shape)


def _cut_down(module, inputs, output: torch.Tensor, state: dict, dim: int, unit: int) -> torch.Tensor:
    import torch

    if not module.training:
        state["rank"] = None
        return output
    # torch's generator, so a gradient-checkpointing recomputation draws the same rank again
    rank = (int(torch.randint(0, dim // unit, ())) + 1) * unit
    state["rank"] = rank
    trained, frozen = _mask(output, rank - unit, rank), _mask(output, 0, rank - unit)
    return (output * trained + output.detach() * frozen) * (dim / rank) ** 0.5


def _cut_up(module, inputs, output: torch.Tensor, state: dict, unit: int) -> torch.Tensor:
    """The frozen ranks' columns of lora_up take no gradient either: they are applied with a detached weight."""
    import torch
    import torch.nn.functional as F

    rank = state["rank"]
    if rank is None or rank == unit:
        return output
    hidden = inputs[0]
    frozen = hidden * _mask(hidden, 0, rank - unit)
    weight = module.weight
    if isinstance(module, torch.nn.Conv2d):
        apply = partial(module._conv_forward, bias=None)
    else:
        apply = partial(F.linear, bias=None)
    # output = up(trained ranks) + up(frozen ranks); swap the second term for one that passes no gradient to up
    return output - apply(frozen, weight) + apply(frozen, weight.detach())
