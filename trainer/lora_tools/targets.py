"""A base model's layers under the names LoRA files give them.

The names come from the model family itself (its AdapterParts: kohya prefix + rename, trainer.adapters.layers.kohya_name),
so a file trained here, by sd-scripts or for A1111 maps to the same layers. Flux's transformer uses the original
model's fused names (flux_names.py): one kohya module there is several diffusers layers, stacked by rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainer.adapters.layers import kohya_name
from trainer.common.errors import UserError
from trainer.config import TrainConfig
from trainer.families.base import AdapterPart
from trainer.families.detect import FAMILY_LABELS
from trainer.families.flux_names import BLOCKS, FLUX_PREFIX
from trainer.families.loading import COMPONENTS, SHIPPED_CONFIGS, detect_family
from trainer.families.registry import family_classes
from trainer.families.single_file import empty_model

LAYERS = (torch.nn.Linear, torch.nn.Conv2d)


@dataclass
class Target:
    """The model layers one kohya module updates: one, or several for a fused Flux module (rows in order)."""

    component: str  # unet, transformer, text_encoder, text_encoder_2
    paths: tuple[str, ...]
    layers: tuple[torch.nn.Module, ...]


def adapter_parts(family: str, source: str, components: dict[str, Any]) -> list[AdapterPart]:
    """Every part that can carry LoRA (denoiser and all text encoders), as the family names them."""
    flux = family == "flux"
    config = TrainConfig(pretrained_model_name_or_path=source, train_t5xxl=flux)
    model = family_classes()[family](config, components)
    return [model.denoiser_part(), *model.text_encoder_parts()]


def module_table(family: str, parts: list[AdapterPart]) -> dict[str, Target]:
    """kohya module name -> Target, over every Linear/Conv2d of every part (LoCon reaches beyond the attention)."""
    table: dict[str, Target] = {}
    for part in parts:
        if family == "flux" and part.name == "transformer":
            table.update(_flux_fused(part.module))
            continue
        for path, layer in part.module.named_modules():
            if isinstance(layer, LAYERS):
                table[kohya_name(part.prefix, path, part.rename)] = Target(part.name, (path,), (layer,))
    return table


def _flux_fused(transformer: torch.nn.Module) -> dict[str, Target]:
    table = {}
    for block, (kohya_block, modules) in BLOCKS.items():
        for index in range(len(getattr(transformer, block))):
            for suffix, paths in modules.items():
                full = tuple(f"{block}.{index}.{path}" for path in paths)
                layers = tuple(transformer.get_submodule(path) for path in full)
                table[f"{FLUX_PREFIX}_{kohya_block}_{index}_{suffix}"] = Target("transformer", full, layers)
    return table


def skeleton(family: str, base: str | None) -> tuple[dict[str, Any], str]:
    """The family's LoRA-carrying parts with no weights (meta device): enough to name every layer.
    Architectures from `base` (a diffusers folder) or the shipped configs of the family."""
    if base is not None and not (Path(base) / "model_index.json").is_file():
        raise UserError(f"--base: '{base}' is not a diffusers model folder", "give the model folder (with "
                        "model_index.json), or leave --base out to use the standard architecture of the family")
    config_dir = base or str(SHIPPED_CONFIGS / ("flux-dev" if family == "flux" else family))
    if base is not None and detect_family(base) != family:
        raise UserError(f"--base: '{base}' is not {FAMILY_LABELS[family]}, the family of the LoRA",
                        "give a base model of the LoRA's family")
    names = [name for name in COMPONENTS[family] if name.startswith(("unet", "transformer", "text_encoder"))]
    components: dict[str, Any] = {name: empty_model(family, name, config_dir) for name in names}
    components["scheduler"] = _scheduler(family, config_dir)
    return components, config_dir


def _scheduler(family: str, config_dir: str):
    from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler

    cls = FlowMatchEulerDiscreteScheduler if family == "flux" else DDPMScheduler
    return cls.from_pretrained(config_dir, subfolder="scheduler")
