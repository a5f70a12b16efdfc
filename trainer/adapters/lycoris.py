"""LoHa and LoKr weights in LyCORIS's key layout, which A1111, Forge, ComfyUI and the LyCORIS library read.

peft's LoHa/LoKr layers were ported from LyCORIS and keep its tensor shapes and names (hada_w1_a is
(out, rank), hada_w1_b (rank, in·kh·kw); lokr_w1 the small Kronecker factor, lokr_w2 or lokr_w2_a/_b the large
one), so a file is each layer's tensors under <kohya name>.<tensor name> plus <kohya name>.alpha. One convention
differs: LyCORIS scales a LoKr layer whose factors are both full matrices by 1, not alpha/rank as peft does, so
peft's scale is folded into lokr_w1 on export (and taken out again on import).
"""

from __future__ import annotations

import torch

from trainer.adapters.layers import ADAPTER, Rename, adapter_layers, kohya_name

TENSORS = {"loha": ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"),
           "lokr": ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")}


def _full_kronecker(layer) -> bool:
    """A LoKr layer whose two factors are full matrices: LyCORIS gives it scale 1 (alpha = rank)."""
    return ADAPTER in getattr(layer, "lokr_w1", {}) and ADAPTER in getattr(layer, "lokr_w2", {})


def lycoris_state_dict(model: torch.nn.Module, kind: str, prefix: str,
                       rename: Rename | None = None) -> dict[str, torch.Tensor]:
    """The model's LoHa/LoKr layers as LyCORIS keys: <name>.hada_w1_a ... or <name>.lokr_w1 ..., <name>.alpha."""
    out: dict[str, torch.Tensor] = {}
    for path, layer in adapter_layers(model).items():
        name = kohya_name(prefix, path, rename)
        for tensor_name in TENSORS[kind]:
            holder = getattr(layer, tensor_name)
            if ADAPTER in holder:
                out[f"{name}.{tensor_name}"] = holder[ADAPTER].detach().clone()
        alpha = float(layer.alpha[ADAPTER])
        if _full_kronecker(layer):
            out[f"{name}.lokr_w1"] *= layer.scaling[ADAPTER]
            alpha = float(layer.r[ADAPTER])
        out[f"{name}.alpha"] = torch.tensor(alpha)
    return out


@torch.no_grad()
def load_lycoris_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], kind: str, prefix: str,
                         rename: Rename | None = None) -> set[str]:
    """Load a LyCORIS LoHa/LoKr file of the same shape into the model's layers; returns the keys used."""
    used: set[str] = set()
    for path, layer in adapter_layers(model).items():
        name = kohya_name(prefix, path, rename)
        for tensor_name in TENSORS[kind]:
            holder, key = getattr(layer, tensor_name), f"{name}.{tensor_name}"
            if ADAPTER not in holder or key not in tensors:
                continue
            value = tensors[key]
            if value.shape != holder[ADAPTER].shape:
                raise RuntimeError(f"{key}: the file holds {tuple(value.shape)}, this network "
                                   f"{tuple(holder[ADAPTER].shape)}")
            if tensor_name == "lokr_w1" and _full_kronecker(layer):
                value = value / layer.scaling[ADAPTER]
            holder[ADAPTER].copy_(value)
            used |= {key, f"{name}.alpha"}
    return used
