"""LoRA: kohya's LierLa, peft's LoRA on the attention and MLP layers, saved as lora_down / lora_up / alpha.

LoraType is also what LoCon (more layers) and DyLoRA (hooks on the ranks) are: the same peft layers, file keys
and kohya regularisers (network/rank/module dropout as hooks, see layers.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainer.adapters.spec import Evidence, FileFacts, NetworkShape, NetworkType, Rename
from trainer.common.errors import UserError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class LoraType(NetworkType):
    def peft_config(self, shape: NetworkShape, targets: list[str], ranks: dict[str, int],
                    alphas: dict[str, float]) -> Any:
        from peft import LoraConfig

        return LoraConfig(r=shape.dim, lora_alpha=shape.alpha, target_modules=targets, rank_pattern=ranks,
                          alpha_pattern=alphas, init_lora_weights=True, **shape.options)

    def after_injection(self, module: torch.nn.Module, config: Any) -> None:
        from trainer.adapters.layers import add_dropouts

        add_dropouts(module, config.network_dropout, config.rank_dropout, config.module_dropout)

    def state_dict(self, module: torch.nn.Module, prefix: str, rename: Rename | None) -> dict[str, torch.Tensor]:
        from trainer.adapters.layers import kohya_state_dict

        return kohya_state_dict(module, prefix, None, rename)  # each layer's own alpha: LoCon's convs carry conv_alpha

    def load_weights(self, module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str,
                     rename: Rename | None) -> set[str]:
        from trainer.adapters.layers import load_kohya_weights

        return load_kohya_weights(module, tensors, prefix, rename)

    def recognises(self, facts: FileFacts) -> Evidence:
        return Evidence.DEFAULT

    def file_rank(self, weights: dict[str, torch.Tensor]) -> int | None:
        return weights["lora_down.weight"].shape[0]

    def file_delta(self, weights: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        if "lora_mid.weight" in weights:
            raise UserError(f"{name}: a LoCon with a Tucker core (lora_mid) is not supported",
                            zh=f"{name}：不支持带 Tucker 核心（lora_mid）的 LoCon")
        down, up = weights["lora_down.weight"], weights["lora_up.weight"]
        return (up.flatten(1) @ down.flatten(1)).reshape(up.shape[0], *down.shape[1:])


LORA = LoraType("lora", "LoRA", "networks.lora", file_keys=("lora_down", "lora_up", "lora_mid"),
                kernel_key="lora_down.weight")
