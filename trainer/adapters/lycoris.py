"""LyCORIS's network types (LoHa, LoKr): what they share, and their weights in LyCORIS's key layout, which A1111,
Forge, ComfyUI and the LyCORIS library read.

peft's LoHa/LoKr layers were ported from LyCORIS and keep its tensor shapes and names (hada_w1_a is
(out, rank), hada_w1_b (rank, in·kh·kw); lokr_w1 the small Kronecker factor, lokr_w2 or lokr_w2_a/_b the large
one), so a file is each layer's tensors under <kohya name>.<tensor name> plus <kohya name>.alpha. One convention
differs: LyCORIS scales a LoKr layer whose factors are both full matrices by 1, not alpha/rank as peft does, so
peft's scale is folded into lokr_w1 on export (and taken out again on import).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from trainer.adapters.spec import Evidence, FileFacts, NetworkType, Rename, set_keys
from trainer.common.errors import RuleError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class LycorisType(NetworkType):
    """A LyCORIS type: its peft layers apply rank_dropout / module_dropout themselves, as LyCORIS does."""

    module: str = "lycoris.kohya"
    convs: bool = True
    tensors: tuple[str, ...] = ()  # the layer's tensors saved under their own names

    kohya_keys: ClassVar[bool] = False
    own_lr_habits: ClassVar[bool] = True  # LyCORIS's products usually train at higher rates (its own guidance)

    def check(self, config: Any) -> None:
        refused = set_keys(config, "network_dropout", "scale_weight_norms")
        if refused:
            raise RuleError(f"network_dropout / scale_weight_norms: not available for {self.name} (LyCORIS has "
                            "neither for it); use rank_dropout / module_dropout, or network_type lora/locon",
                            *refused, "network_type",
                            zh=f"network_dropout / scale_weight_norms：{self.name} 不支持（LyCORIS 对它两样都没有）；"
                            "请改用 rank_dropout / module_dropout，或 network_type lora/locon")

    def peft_options(self, config: Any) -> dict[str, Any]:
        return {"rank_dropout": config.rank_dropout or 0.0, "module_dropout": config.module_dropout or 0.0}

    def recognises(self, facts: FileFacts) -> Evidence:
        return Evidence.KEYS if self.name in facts.layouts else Evidence.NONE

    def state_dict(self, module: torch.nn.Module, prefix: str, rename: Rename | None) -> dict[str, torch.Tensor]:
        """The part's layers as LyCORIS keys: <name>.hada_w1_a ... or <name>.lokr_w1 ..., and <name>.alpha."""
        import torch

        from trainer.adapters.layers import ADAPTER, adapter_layers, kohya_name

        out: dict[str, torch.Tensor] = {}
        for path, layer in adapter_layers(module).items():
            name = kohya_name(prefix, path, rename)
            for tensor_name in self.tensors:
                holder = getattr(layer, tensor_name)
                if ADAPTER in holder:
                    out[f"{name}.{tensor_name}"] = holder[ADAPTER].detach().clone()
            alpha = float(layer.alpha[ADAPTER])
            if _full_kronecker(layer, ADAPTER):
                out[f"{name}.lokr_w1"] *= layer.scaling[ADAPTER]
                alpha = float(layer.r[ADAPTER])
            out[f"{name}.alpha"] = torch.tensor(alpha)
        return out

    def load_weights(self, module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str,
                     rename: Rename | None) -> set[str]:
        """Load a LyCORIS file of the same shape into the part's layers; returns the keys used."""
        import torch

        from trainer.adapters.layers import ADAPTER, adapter_layers, kohya_name

        used: set[str] = set()
        for path, layer in adapter_layers(module).items():
            name = kohya_name(prefix, path, rename)
            for tensor_name in self.tensors:
                holder, key = getattr(layer, tensor_name), f"{name}.{tensor_name}"
                if ADAPTER not in holder or key not in tensors:
                    continue
                value = tensors[key]
                if value.shape != holder[ADAPTER].shape:
                    raise RuntimeError(f"{key}: the file holds {tuple(value.shape)}, this network "
                                       f"{tuple(holder[ADAPTER].shape)}")
                if tensor_name == "lokr_w1" and _full_kronecker(layer, ADAPTER):
                    value = value / layer.scaling[ADAPTER]
                with torch.no_grad():
                    holder[ADAPTER].copy_(value)
                used |= {key, f"{name}.alpha"}
        return used


def _full_kronecker(layer, adapter: str) -> bool:
    """A LoKr layer whose two factors are full matrices: LyCORIS gives it scale 1 (alpha = rank)."""
    return adapter in getattr(layer, "lokr_w1", {}) and adapter in getattr(layer, "lokr_w2", {})


def tucker(core: torch.Tensor, b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """A Tucker-decomposed conv factor (LyCORIS use_tucker) as one weight."""
    import torch

    return torch.einsum("i j k l, j r, i p -> p r k l", core, b, a)
