"""`lora merge`: bake LoRA files into a base model's weights, W += ratio * dW, and save the model.

dW per module: LoRA/LoCon up @ down * alpha / rank; LoHa (w1a @ w1b) * (w2a @ w2b) * alpha / rank; LoKr
kron(w1, w2) * alpha / rank (keys.Module.delta). Layers are found through the family's own names (targets.py);
a fused Flux module (q/k/v, linear1) updates its diffusers layers row block by row block. diffusers-layout files
are merged by their module paths. The sum is computed in float32 and stored in the model's dtype.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..export import atomic_save_safetensors
from ..families.detect import FAMILY_LABELS
from ..families.loading import ModelSources, detect_family, load_components
from .keys import LoraFile, peft_modules
from .targets import Target, adapter_parts, module_table

FORMATS = ("diffusers", "safetensors")
SAVED = ("unet", "transformer", "text_encoder", "text_encoder_2", "vae")  # the parts with weights
LAYOUT_KEY, CONFIGS_KEY = "danlu_layout", "danlu_configs"
LAYOUT = "diffusers-components"  # every component's diffusers state dict, keys prefixed with its name


def load_base(base: str, dtype: torch.dtype) -> tuple[str, dict[str, Any], dict[str, Target]]:
    family = detect_family(base)
    if family is None:
        raise UserError(f"BASE: cannot tell which model '{base}' is",
                        "give an SD1.x/2.x, SDXL or Flux.1 checkpoint (.safetensors) or diffusers model folder")
    components = load_components(ModelSources(base), family, dtype)
    return family, components, module_table(family, adapter_parts(family, base, components))


@torch.no_grad()
def merge_into(family: str, components: dict[str, Any], table: dict[str, Target], lora: LoraFile,
               ratio: float) -> int:
    """Adds one file's updates; returns how many layers changed. Refuses files with modules that name no layer."""
    if lora.family and lora.family != family:
        raise UserError(f"{lora.path}: a LoRA for {FAMILY_LABELS[lora.family]}, but the base model is "
                        f"{FAMILY_LABELS[family]}", "merge LoRAs into the model family they were trained on")
    updates = _kohya_updates(lora, table) if lora.layout == "kohya" else _peft_updates(lora, components)
    for layers, delta in updates:
        _add(layers, delta, ratio, lora)
    return sum(len(layers) for layers, _ in updates)


def _kohya_updates(lora: LoraFile, table: dict[str, Target]) -> list[tuple[tuple, torch.Tensor]]:
    modules = lora.modules
    unmapped = [name for name in modules if name not in table]
    if unmapped:
        raise UserError(f"{lora.path}: {len(unmapped)} of {len(modules)} module(s) name no layer of the base model, "
                        f"e.g. {unmapped[0]}", "check the LoRA was made for this base model")
    return [(table[name].layers, module.delta()) for name, module in modules.items()]


def _peft_updates(lora: LoraFile, components: dict[str, Any]) -> list[tuple[tuple, torch.Tensor]]:
    updates, unmapped = [], []
    for m in peft_modules(lora):
        layer = _submodule(components.get(m.component), m.path)
        if layer is None:
            unmapped.append(f"{m.component}.{m.path}")
            continue
        delta = m.up.float().flatten(1) @ m.down.float().flatten(1) * (m.alpha / m.down.shape[0])
        updates.append(((layer,), delta))
    if unmapped:
        raise UserError(f"{lora.path}: {len(unmapped)} module(s) name no layer of the base model, e.g. {unmapped[0]}",
                        "check the LoRA was made for this base model")
    return updates


def _submodule(component, path: str):
    if component is None:
        return None
    for candidate in (path, path.removeprefix("text_model."), "text_model." + path):
        try:
            return component.get_submodule(candidate)
        except AttributeError:
            continue
    return None


def _add(layers: tuple, delta: torch.Tensor, ratio: float, lora: LoraFile) -> None:
    """W += ratio * dW; a fused module's dW is the layers' weights stacked by rows."""
    rows = [layer.weight.shape[0] for layer in layers]
    if delta.shape[0] != sum(rows) or delta[0].numel() != layers[0].weight[0].numel():
        raise UserError(f"{lora.path}: a module's shape {tuple(delta.shape)} does not fit the base model's layer "
                        f"{tuple(layers[0].weight.shape)}", "check the LoRA was made for this base model")
    for layer, part in zip(layers, torch.split(delta, rows, 0)):
        weight = layer.weight
        weight.copy_((weight.float() + ratio * part.reshape(weight.shape)).to(weight.dtype))


# ---------------------------------------------------------------- saving


def save_merged(family: str, components: dict[str, Any], base: str, out: Path, fmt: str, note: dict) -> None:
    if fmt == "diffusers":
        _save_folder(family, components, base, out)
    else:
        _save_file(components, out, note)


def _save_folder(family: str, components: dict[str, Any], base: str, out: Path) -> None:
    """A diffusers model folder, written next to `out` and renamed into place (a killed run leaves no half folder)."""
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    _pipeline(family, components).save_pretrained(tmp, safe_serialization=True)
    scheduler = Path(base) / "scheduler"
    if scheduler.is_dir():  # keep the base model's sampler, not the training schedule the loader builds
        shutil.rmtree(tmp / "scheduler")
        shutil.copytree(scheduler, tmp / "scheduler")
    old = out.with_name(f".{out.name}.old")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _pipeline(family: str, components: dict[str, Any]):
    from diffusers import (
        FluxPipeline,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )

    if family == "flux":
        return FluxPipeline(**components)
    if family == "sdxl":
        return StableDiffusionXLPipeline(**components)
    return StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def _save_file(components: dict[str, Any], out: Path, note: dict) -> None:
    """One .safetensors: `<component>.<diffusers key>` for every weighted part, their configs in the header."""
    tensors, configs, seen = {}, {}, set()
    for name in SAVED:
        model = components.get(name)
        if model is None:
            continue
        for key, value in model.state_dict().items():
            shared = value.data_ptr() in seen  # tied weights (T5's embeddings): safetensors stores no aliases
            seen.add(value.data_ptr())
            tensors[f"{name}.{key}"] = value.clone() if shared else value.contiguous()
        configs[name] = model.config.to_dict() if hasattr(model.config, "to_dict") else dict(model.config)
    metadata = {"format": "pt", LAYOUT_KEY: LAYOUT, CONFIGS_KEY: json.dumps(configs, default=str),
                "danlu_merge": json.dumps(note, ensure_ascii=False)}
    atomic_save_safetensors(out, tensors, metadata)


def load_merged_file(path: Path) -> dict[str, torch.nn.Module]:
    """Read back a single file written by `lora merge --format safetensors`: component name -> model."""
    import safetensors

    from ..families.single_file import component_class

    with safetensors.safe_open(str(path), "pt") as handle:
        meta = handle.metadata() or {}
        if meta.get(LAYOUT_KEY) != LAYOUT:
            raise UserError(f"'{path}' is not a model merged by `lora merge --format safetensors`")
        keys = list(handle.keys())  # safe_open is no dict: iterating it does not give the keys
        state = {k: handle.get_tensor(k) for k in keys}
    family = json.loads(meta["danlu_merge"]).get("family")
    models = {}
    for name, config in json.loads(meta[CONFIGS_KEY]).items():
        cls = component_class(family, name)
        model = cls(cls.config_class.from_dict(config)) if name.startswith("text_encoder") else cls.from_config(config)
        prefix = f"{name}."
        model.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        models[name] = model.eval()
    return models
