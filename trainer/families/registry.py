"""Pick the model family of a config's base model and load it."""

from __future__ import annotations

from pathlib import Path

import torch

from trainer.common.errors import UserError
from trainer.config import TrainConfig
from trainer.families.base import ModelFamily
from trainer.families.detect import FAMILY_LABELS
from trainer.families.loading import ModelSources, detect_family, load_components


def family_classes() -> dict[str, type[ModelFamily]]:
    from trainer.families.flux import FluxFamily
    from trainer.families.sd import SDFamily
    from trainer.families.sdxl import SDXLFamily

    return {"sd1": SDFamily, "sd2": SDFamily, "sdxl": SDXLFamily, "flux": FluxFamily}


def resolve_family(config: TrainConfig) -> str:
    """model_family, or the family detected from the base model; a mismatch between the two is refused."""
    source = config.pretrained_model_name_or_path
    detected = detect_family(source)
    chosen = config.model_family
    if chosen == "auto":
        if detected is None and Path(source).expanduser().is_dir():
            raise UserError(f"pretrained_model_name_or_path: cannot load '{source}': it is not a diffusers model "
                            "folder Danlu recognises (model_index.json with unet/ or transformer/)",
                            "pick the model's folder itself, or a single .safetensors checkpoint")
        if detected is None:
            raise UserError(f"model_family: cannot tell which model '{source}' is",
                            "set model_family to sd1, sd2, sdxl or flux")
        return detected
    if detected is not None and detected != chosen:
        raise UserError(f"model_family: set to {chosen} ({FAMILY_LABELS[chosen]}), but '{source}' is an "
                        f"{FAMILY_LABELS[detected]} model", "set model_family to auto, or pick a matching base model")
    return chosen


def load_family(config: TrainConfig, dtype: torch.dtype) -> ModelFamily:
    name = resolve_family(config)
    sources = ModelSources(config.pretrained_model_name_or_path,
                           vae=config.ae if name == "flux" else config.vae, clip_l=config.clip_l,
                           t5xxl=config.t5xxl, base_model_config=config.base_model_config)
    config = config.model_copy(update={"model_family": name})
    family = family_classes()[name](config, load_components(sources, name, dtype))
    family.check_options()
    return family
