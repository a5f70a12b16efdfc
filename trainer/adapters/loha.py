"""LoHa (LyCORIS algo=loha): each weight update is the Hadamard product of two low-rank products, peft's LoHa."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainer.adapters.lycoris import LycorisType, tucker
from trainer.adapters.spec import NetworkShape

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class LoHa(LycorisType):
    def peft_config(self, shape: NetworkShape, targets: list[str], ranks: dict[str, int],
                    alphas: dict[str, float]) -> Any:
        from peft import LoHaConfig

        return LoHaConfig(r=shape.dim, alpha=shape.alpha, target_modules=targets, rank_pattern=ranks,
                          alpha_pattern=alphas, **shape.options)

    def file_rank(self, weights: dict[str, torch.Tensor]) -> int | None:
        return weights["hada_w1_b"].shape[0]

    def file_delta(self, weights: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """LyCORIS: dW = (w1a @ w1b) * (w2a @ w2b), times alpha / rank."""
        return _factor(weights, "1") * _factor(weights, "2")


def _factor(w: dict[str, torch.Tensor], i: str) -> torch.Tensor:
    a, b = w[f"hada_w{i}_a"], w[f"hada_w{i}_b"]
    core = w.get(f"hada_t{i}")
    if core is not None:
        return tucker(core, b, a)
    return a @ b.flatten(1) if b.dim() > 2 else a @ b


LOHA = LoHa("loha", "LoHa", algo="loha", file_keys=("hada_",), kernel_key="hada_w1_b", rank_pairs=2,
            tensors=("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"))
