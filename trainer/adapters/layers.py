"""LoRA adapters injected with peft, and their weights in kohya's key layout: the helpers the type modules share.

kohya's LoRA ("LierLa") adapts every linear/1x1 layer inside the UNet's transformer blocks and the text
encoder's attention and MLP. peft's scaling is lora_alpha / r, the same as kohya's alpha / dim, and its
initialisation (A random, B zero) matches kohya's, so a peft LoRA is a kohya LoRA under other key names.
kohya's extra regularisers (feature, rank and module dropout, max-norm) are added here as hooks on peft's layers.
Which peft layers a network type injects and how it saves them is the type's own (lora.py, loha.py, ...).
"""

from __future__ import annotations

import re
from functools import partial

import torch
import torch.nn.functional as F
from peft import get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer

from trainer.adapters.spec import NetworkShape, Rename

ADAPTER = "default"


def add_network(model: torch.nn.Module, shape: NetworkShape, targets: list[str] | str,
                conv_targets: list[str] = ()) -> list[torch.nn.Parameter]:
    """Freeze the model, inject the adapter into targets (and conv_targets, at conv_dim/conv_alpha) and return
    the new trainable parameters."""
    model.requires_grad_(False)
    all_targets = targets if not conv_targets else [*targets, *conv_targets]
    # peft matches pattern keys as regular expressions against a module path's end
    ranks = {re.escape(t): shape.conv_dim or shape.dim for t in conv_targets}
    alphas = {re.escape(t): shape.conv_alpha or shape.alpha for t in conv_targets}
    config = shape.kind.peft_config(shape, all_targets, ranks, alphas)
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    params = _adapter_params(model)
    for param in params:
        param.requires_grad_(True)
    if not params:
        raise ValueError(f"no module of {type(model).__name__} matches the LoRA targets {targets}")
    return params


def _adapter_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The adapters' own weights (lora_A/B, hada_*, lokr_*), in the model's module order."""
    params = []
    for layer in adapter_layers(model).values():
        for name in layer.adapter_layer_names:
            holder = getattr(layer, name)
            if ADAPTER in holder:
                value = holder[ADAPTER]
                params += [value] if isinstance(value, torch.nn.Parameter) else list(value.parameters())
    return params


def adapter_layers(model: torch.nn.Module) -> dict[str, BaseTunerLayer]:
    """Every peft adapter layer (LoRA, LoHa, LoKr) by module path."""
    return {name: module for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)}


def lora_layers(model: torch.nn.Module) -> dict[str, LoraLayer]:
    return {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}


def kohya_name(prefix: str, module_path: str, rename: Rename | None = None) -> str:
    """kohya's module name: <prefix>_<module path, dots as underscores>.

    rename maps the loaded model's path to the one kohya's names use (e.g. SDXL's original block numbering).
    """
    return f"{prefix}_{(rename(module_path) if rename else module_path).replace('.', '_')}"


def kohya_state_dict(model: torch.nn.Module, prefix: str, alpha: float | None = None,
                     rename: Rename | None = None) -> dict[str, torch.Tensor]:
    """The model's LoRA weights as kohya keys: <name>.lora_down.weight / .lora_up.weight / .alpha.

    alpha None: each layer's own (LoCon's conv layers carry conv_alpha)."""
    state = get_peft_model_state_dict(model, adapter_name=ADAPTER)
    layers = lora_layers(model)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        module_path, kind = key.rsplit(".lora_", 1)
        name = kohya_name(prefix, module_path, rename)
        out[f"{name}.{'lora_down' if kind.startswith('A') else 'lora_up'}.weight"] = tensor.detach()
        # diffusers' own kohya converter writes alpha = rank; kohya readers need the real alpha.
        layer_alpha = layers[module_path].lora_alpha[ADAPTER] if alpha is None else alpha
        out[f"{name}.alpha"] = torch.tensor(float(layer_alpha))
    return out


def load_kohya_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str,
                       rename: Rename | None = None) -> set[str]:
    """Load a kohya LoRA's weights into the model's peft layers; returns the file keys it used."""
    state, used = {}, set()
    for path in lora_layers(model):
        name = kohya_name(prefix, path, rename)
        down, up = tensors.get(f"{name}.lora_down.weight"), tensors.get(f"{name}.lora_up.weight")
        if down is None or up is None:
            continue
        state[f"{path}.lora_A.weight"], state[f"{path}.lora_B.weight"] = down, up
        used |= {f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"}
    set_peft_model_state_dict(model, state, adapter_name=ADAPTER)
    return used


def add_dropouts(model: torch.nn.Module, network_dropout: float | None, rank_dropout: float | None,
                 module_dropout: float | None) -> None:
    """kohya's LoRA regularisers, active only while the model is in training mode."""
    for layer in lora_layers(model).values():
        if network_dropout or rank_dropout:
            layer.lora_A[ADAPTER].register_forward_hook(
                partial(_drop_features, network_dropout=network_dropout or 0.0, rank_dropout=rank_dropout or 0.0))
        if module_dropout:
            layer.lora_B[ADAPTER].register_forward_hook(partial(_drop_module, p=module_dropout))


def _drop_features(module, inputs, output: torch.Tensor, network_dropout: float, rank_dropout: float):
    if not module.training:
        return output
    if network_dropout:
        output = F.dropout(output, p=network_dropout)
    if rank_dropout:
        conv = output.dim() == 4  # Conv2d LoRA: ranks are channels (dim 1); Linear: the last dim
        rank = output.shape[1] if conv else output.shape[-1]
        keep = (torch.rand(output.shape[0], rank, device=output.device) > rank_dropout).to(output.dtype)
        shape = (output.shape[0], rank, 1, 1) if conv else (output.shape[0],) + (1,) * (output.dim() - 2) + (rank,)
        output = output * keep.view(shape) / (1.0 - rank_dropout)  # kohya scales the survivors up
    return output


def _drop_module(module, inputs, output: torch.Tensor, p: float):
    if module.training and torch.rand(()) < p:
        return output * 0  # this step the layer acts as if it had no LoRA
    return output


@torch.no_grad()
def apply_max_norm(layers: list[LoraLayer], max_norm: float) -> tuple[int, float, float]:
    """kohya's scale_weight_norms: shrink every module whose up·down·scale norm exceeds max_norm.

    Returns (modules scaled, mean norm, max norm) after scaling, as sd-scripts logs them. The norms stay on the
    device and are read back once, together: a readback per layer would stall a GPU step hundreds of times.
    """
    if not layers:
        return 0, 0.0, 0.0
    pairs = [(layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight, layer.scaling[ADAPTER]) for layer in layers]
    norms = torch.stack([(up.flatten(1).float() @ down.flatten(1).float() * scale).norm() for down, up, scale in pairs])
    ratios = torch.where(norms > max_norm, max_norm / norms, torch.ones_like(norms))
    for (down, up, _), root in zip(pairs, ratios.sqrt()):  # a ratio of 1 leaves the weights exactly as they are
        down.mul_(root.to(down.dtype))
        up.mul_(root.to(up.dtype))
    after = norms * ratios
    scaled, mean, largest = torch.stack([(ratios < 1).sum().float(), after.mean(), after.max()]).tolist()
    return int(scaled), mean, largest
