"""LoRA adapters injected with peft, and their weights in kohya's key layout.

kohya's LoRA ("LierLa") adapts every linear/1x1 layer inside the UNet's transformer blocks and the text
encoder's attention and MLP. peft's scaling is lora_alpha / r, the same as kohya's alpha / dim, and its
initialisation (A random, B zero) matches kohya's, so a peft LoRA is a kohya LoRA under other key names.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

ADAPTER = "default"


def add_lora(model: torch.nn.Module, targets: list[str], dim: int, alpha: float) -> list[torch.nn.Parameter]:
    """Freeze the model, inject LoRA into the target modules and return the new trainable parameters."""
    model.requires_grad_(False)
    config = LoraConfig(r=dim, lora_alpha=alpha, target_modules=targets, init_lora_weights=True)
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    params = [p for name, p in model.named_parameters() if "lora_" in name]
    for param in params:
        param.requires_grad_(True)
    if not params:
        raise ValueError(f"no module of {type(model).__name__} matches the LoRA targets {targets}")
    return params


def kohya_state_dict(model: torch.nn.Module, prefix: str, alpha: float, module_root: str = "") -> dict[str, torch.Tensor]:
    """The model's LoRA weights as kohya keys: <prefix>_<module_root + module path, with _>.lora_down/.lora_up/.alpha.

    module_root restores a path prefix that kohya's names carry but the loaded model lacks.
    """
    state = get_peft_model_state_dict(model, adapter_name=ADAPTER)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        module_path, kind = key.rsplit(".lora_", 1)
        name = f"{prefix}_{(module_root + module_path).replace('.', '_')}"
        out[f"{name}.{'lora_down' if kind.startswith('A') else 'lora_up'}.weight"] = tensor.detach()
        # diffusers' own kohya converter writes alpha = rank; kohya readers need the real alpha.
        out[f"{name}.alpha"] = torch.tensor(float(alpha))
    return out
