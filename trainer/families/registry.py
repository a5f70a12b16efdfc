"""Pick the model family of a config's base model and load it."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

import torch

from trainer.common.errors import UserError
from trainer.config import TrainConfig
from trainer.families.base import ModelFamily
from trainer.families.detect import detect_family
from trainer.families.loading import SOURCE_FIELDS, ModelSources, load_components
from trainer.families.table import FAMILIES


def family_class(name: str) -> type[ModelFamily]:
    """The ModelFamily class the table names for `name`, imported now (it imports diffusers)."""
    module, _, cls = FAMILIES[name].implementation.partition(":")
    return getattr(import_module(module), cls)


def resolve_family(config: TrainConfig) -> str:
    """model_family, or the family detected from the base model; a mismatch between the two is refused."""
    source = config.pretrained_model_name_or_path
    detected = detect_family(source)
    chosen = config.model_family
    if chosen == "auto":
        if detected is None and Path(source).expanduser().is_dir():
            raise UserError(f"pretrained_model_name_or_path: cannot load '{source}': it is not a diffusers model "
                            "folder Danlu recognises (model_index.json with unet/ or transformer/)",
                            "pick the model's folder itself, or a single .safetensors checkpoint",
                            zh=f"pretrained_model_name_or_path：无法加载 '{source}'："
                            "它不是丹炉认识的 diffusers 模型文件夹"
                            "（要有 model_index.json 以及 unet/ 或 transformer/）",
                            hint_zh="请选择模型文件夹本身，或单个 .safetensors 模型文件")
        if detected is None:
            raise UserError(f"model_family: cannot tell which model '{source}' is",
                            f"set model_family to {', '.join(list(FAMILIES)[:-1])} or {list(FAMILIES)[-1]}",
                            zh=f"model_family：认不出 '{source}' 是哪种模型",
                            hint_zh=f"请把 model_family 设为 {', '.join(FAMILIES)} 之一")
        return detected
    if detected is not None and detected != chosen:
        raise UserError(f"model_family: set to {chosen} ({FAMILIES[chosen].label}), but '{source}' is an "
                        f"{FAMILIES[detected].label} model", "set model_family to auto, or pick a matching base model",
                        zh=f"model_family：设成了 {chosen}（{FAMILIES[chosen].label}），但 '{source}' 是 "
                        f"{FAMILIES[detected].label} 模型", hint_zh="请把 model_family 设为 auto，或换一个匹配的底模")
    return chosen


def fp8_components(config: TrainConfig, family: str) -> frozenset[str]:
    """The components fp8_base stores in float8: the denoiser, and with fp8_text_encoders the frozen encoders."""
    spec = FAMILIES[family]
    names = {spec.denoiser} if config.fp8_denoiser else set()
    if config.fp8_text_encoders:
        names |= {e.component for e in spec.text_encoders} - set(config.trained_text_encoders(family))
    return frozenset(names)


def load_family(config: TrainConfig, dtype: torch.dtype) -> ModelFamily:
    name = resolve_family(config)
    files = {SOURCE_FIELDS[component]: getattr(config, key)  # e.g. Flux's vae is the config's ae
             for component, key in FAMILIES[name].separate_files.items()}
    sources = ModelSources(config.pretrained_model_name_or_path, base_model_config=config.base_model_config, **files)
    config = config.model_copy(update={"model_family": name})
    family = family_class(name)(config, load_components(sources, name, dtype, fp8_components(config, name)))
    family.check_options()
    return family
