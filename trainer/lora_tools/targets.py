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
from trainer.families.detect import detect_family
from trainer.families.flux_names import BLOCKS, FLUX_PREFIX
from trainer.families.loading import SHIPPED_CONFIGS, load_scheduler, shipped_config
from trainer.families.registry import family_class
from trainer.families.single_file import empty_model
from trainer.families.table import FAMILIES

LAYERS = (torch.nn.Linear, torch.nn.Conv2d)


@dataclass
class Target:
    """The model layers one kohya module updates: one, or several for a fused Flux module (rows in order)."""

    component: str  # unet, transformer, text_encoder, text_encoder_2
    paths: tuple[str, ...]
    layers: tuple[torch.nn.Module, ...]


def adapter_parts(family: str, source: str, components: dict[str, Any]) -> list[AdapterPart]:
    """Every part that can carry LoRA (denoiser and all text encoders, opt-in ones too), as the family names them."""
    opt_ins = {encoder.opt_in: True for encoder in FAMILIES[family].text_encoders if encoder.opt_in}
    config = TrainConfig(pretrained_model_name_or_path=source, **opt_ins)
    model = family_class(family)(config, components)
    return [model.denoiser_part(), *model.text_encoder_parts()]


def module_table(family: str, parts: list[AdapterPart]) -> dict[str, Target]:
    """kohya module name -> Target, over every Linear/Conv2d of every part (LoCon reaches beyond the attention)."""
    spec = FAMILIES[family]
    table: dict[str, Target] = {}
    for part in parts:
        if spec.fused_qkv and part.name == spec.denoiser:
            table.update(_fused_modules(part.module))
            continue
        for path, layer in part.module.named_modules():
            if isinstance(layer, LAYERS):
                table[kohya_name(part.prefix, path, part.rename)] = Target(part.name, (path,), (layer,))
    return table


def _fused_modules(transformer: torch.nn.Module) -> dict[str, Target]:
    """kohya names of the original (BFL) Flux model, whose modules fuse q/k/v (flux_names.BLOCKS)."""
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
                        "model_index.json), or leave --base out to use the standard architecture of the family",
                        zh=f"--base：'{base}' 不是 diffusers 模型文件夹",
                        hint_zh="请给模型文件夹（含 model_index.json），或不写 --base，使用该模型家族的标准结构")
    spec = FAMILIES[family]
    config_dir = base or str(SHIPPED_CONFIGS / shipped_config(family))
    if base is not None and detect_family(base) != family:
        raise UserError(f"--base: '{base}' is not {spec.label}, the family of the LoRA",
                        "give a base model of the LoRA's family",
                        zh=f"--base：'{base}' 不是 {spec.label}，与这个 LoRA 的模型家族不符",
                        hint_zh="请给与 LoRA 同一家族的底模")
    names = [spec.denoiser, *(encoder.component for encoder in spec.text_encoders)]
    components: dict[str, Any] = {name: empty_model(family, name, config_dir) for name in names}
    components["scheduler"] = load_scheduler(config_dir, family, "--base")
    return components, config_dir
