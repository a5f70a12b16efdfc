"""`lora merge`: bake LoRA files into a base model's weights, W += ratio * dW, and save the model.

dW per module: LoRA/LoCon up @ down * alpha / rank; LoHa (w1a @ w1b) * (w2a @ w2b) * alpha / rank; LoKr
kron(w1, w2) * alpha / rank (keys.Module.delta). Layers are found through the family's own names (targets.py);
a fused Flux module (q/k/v, linear1) updates its diffusers layers row block by row block. diffusers-layout files
are merged by their module paths. The sum is computed in float32 and stored in the model's dtype. Saved as a
diffusers folder, or one file in the original layout A1111/Forge/ComfyUI load (original_layout.py).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from trainer.common.errors import ConfigError, UserError
from trainer.common.places import MODEL_MARKER, is_danlu_model_folder, model_folder_problems
from trainer.families.detect import detect_family
from trainer.families.loading import ModelSources, load_components
from trainer.families.original_layout import original_file
from trainer.families.registry import family_class
from trainer.families.table import FAMILIES
from trainer.lora_tools.keys import LoraFile, peft_modules
from trainer.lora_tools.targets import Target, adapter_parts, module_table
from trainer.training.export import atomic_save_safetensors


def load_base(base: str, dtype: torch.dtype) -> tuple[str, dict[str, Any], dict[str, Target]]:
    family = detect_family(base)
    if family is None:
        raise UserError(f"BASE: cannot tell which model '{base}' is",
                        "give a checkpoint (.safetensors) or diffusers model folder of "
                        + ", ".join(family.label for family in FAMILIES.values()),
                        zh=f"BASE：看不出 '{base}' 是哪种模型",
                        hint_zh="请给 " + "、".join(family.label for family in FAMILIES.values())
                        + " 的模型文件（.safetensors）或 diffusers 模型文件夹")
    components = load_components(ModelSources(base), family, dtype)
    return family, components, module_table(family, adapter_parts(family, base, components))


@torch.no_grad()
def merge_into(family: str, components: dict[str, Any], table: dict[str, Target], lora: LoraFile,
               ratio: float) -> Counter:
    """Adds one file's updates; returns how many layers changed per component. Refuses files with modules that
    name no layer."""
    changed: Counter = Counter()
    for component, layers, delta in lora_updates(family, components, table, lora):
        add_delta(layers, delta, ratio, lora)
        changed[component] += len(layers)
    return changed


def lora_updates(family: str, components: dict[str, Any], table: dict[str, Target],
                 lora: LoraFile) -> list[tuple[str, tuple, torch.Tensor]]:
    """(component, layers, dW) of each module of a file, dW in float32 on the file's tensors' device; refuses a
    file of another family and modules that name no layer. `lora merge` and `try` (trainer/try_lora/) share it."""
    if lora.family and lora.family != family:
        raise UserError(f"{lora.path}: a LoRA for {FAMILIES[lora.family].label}, but the base model is "
                        f"{FAMILIES[family].label}", "use LoRAs with the model family they were trained on",
                        zh=f"{lora.path}：这是 {FAMILIES[lora.family].label} 的 LoRA"
                        f"，但底模是 {FAMILIES[family].label}",
                        hint_zh="LoRA 只能用于训练它的那一类模型")
    return _kohya_updates(lora, table) if lora.layout == "kohya" else _peft_updates(lora, components)


def _kohya_updates(lora: LoraFile, table: dict[str, Target]) -> list[tuple[str, tuple, torch.Tensor]]:
    modules = lora.modules
    unmapped = [name for name in modules if name not in table]
    if unmapped:
        raise UserError(f"{lora.path}: {len(unmapped)} of {len(modules)} module(s) name no layer of the base model, "
                        f"e.g. {unmapped[0]}", "check the LoRA was made for this base model",
                        zh=f"{lora.path}：{len(modules)} 个模块中有 {len(unmapped)} 个在底模里找不到对应的层，"
                        f"例如 {unmapped[0]}", hint_zh="请确认这个 LoRA 是给这个底模训练的")
    return [(table[name].component, table[name].layers, module.delta()) for name, module in modules.items()]


def _peft_updates(lora: LoraFile, components: dict[str, Any]) -> list[tuple[str, tuple, torch.Tensor]]:
    updates, unmapped = [], []
    for m in peft_modules(lora):
        layer = _submodule(components.get(m.component), m.path)
        if layer is None:
            unmapped.append(f"{m.component}.{m.path}")
            continue
        delta = m.up.float().flatten(1) @ m.down.float().flatten(1) * (m.alpha / m.down.shape[0])
        updates.append((m.component, (layer,), delta))
    if unmapped:
        raise UserError(f"{lora.path}: {len(unmapped)} module(s) name no layer of the base model, e.g. {unmapped[0]}",
                        "check the LoRA was made for this base model",
                        zh=f"{lora.path}：有 {len(unmapped)} 个模块在底模里找不到对应的层，例如 {unmapped[0]}",
                        hint_zh="请确认这个 LoRA 是给这个底模训练的")
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


def add_delta(layers: tuple, delta: torch.Tensor, ratio: float, lora: LoraFile) -> None:
    """W += ratio * dW (summed in float32, stored in W's dtype); a fused module's dW is the layers' weights
    stacked by rows."""
    rows = [layer.weight.shape[0] for layer in layers]
    if delta.shape[0] != sum(rows) or delta[0].numel() != layers[0].weight[0].numel():
        raise UserError(f"{lora.path}: a module's shape {tuple(delta.shape)} does not fit the base model's layer "
                        f"{tuple(layers[0].weight.shape)}", "check the LoRA was made for this base model",
                        zh=f"{lora.path}：模块形状 {tuple(delta.shape)} "
                        f"与底模的层 {tuple(layers[0].weight.shape)} 不匹配",
                        hint_zh="请确认这个 LoRA 是给这个底模训练的")
    for layer, part in zip(layers, torch.split(delta, rows, 0)):
        weight = layer.weight
        weight.copy_((weight.float() + ratio * part.reshape(weight.shape).to(weight.device)).to(weight.dtype))


# ---------------------------------------------------------------- saving


def save_merged(family: str, components: dict[str, Any], base: str, out: Path, fmt: str, note: dict,
                changed: Counter) -> None:
    """`changed`: layers changed per component, over all merged files."""
    if fmt == "diffusers":
        _save_folder(family, components, base, out, note)
        return
    spec = FAMILIES[family]
    lost = sorted(name for name in changed if name not in spec.single_file_parts)
    if lost:  # the merged text encoders would be silently dropped
        raise UserError(f"--format safetensors: the LoRA(s) changed {spec.label}'s {' and '.join(lost)}, which its "
                        f"single file does not hold ({', '.join(spec.separate_files.values())} stay the base's)",
                        "use --format diffusers (-o a folder) to keep the merged text encoders",
                        zh=f"--format safetensors：LoRA 改动了 {spec.label} 的 {'和'.join(lost)}"
                        "，而它的单文件里不含这些"
                        f"（{', '.join(spec.separate_files.values())} 仍是底模的）",
                        hint_zh="请用 --format diffusers（-o 指向文件夹）保留合并后的文本编码器")
    _save_file(family, components, out, note)


def _save_folder(family: str, components: dict[str, Any], base: str, out: Path, note: dict) -> None:
    """A diffusers model folder, written next to `out` and renamed into place (a killed run leaves no half folder).
    MODEL_MARKER (the merge's note) marks it as Danlu's: the one kind of folder a later --overwrite replaces."""
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    family_class(family).assemble(components).save_pretrained(tmp, safe_serialization=True)
    scheduler = Path(base) / "scheduler"
    if scheduler.is_dir():  # keep the base model's sampler, not the training schedule the loader builds
        shutil.rmtree(tmp / "scheduler")
        shutil.copytree(scheduler, tmp / "scheduler")
    (tmp / MODEL_MARKER).write_text(json.dumps(note, ensure_ascii=False, indent=2), encoding="utf-8")
    problems = model_folder_problems(out, "-o", overwrite=True)  # again: out may have changed while merging
    if problems:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ConfigError(problems)
    old = out.with_name(f".{out.name}.old")
    if out.exists():
        if is_danlu_model_folder(old):  # left by a merge killed between the two renames below
            shutil.rmtree(old)
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _save_file(family: str, components: dict[str, Any], out: Path, note: dict) -> None:
    """The original layout A1111/Forge/ComfyUI load: an LDM checkpoint (SD), or Flux's transformer in BFL names
    (like flux1-dev.safetensors; ae, clip_l and t5xxl stay the base's files)."""
    tensors = original_file(family, components)
    metadata = {"format": "pt", "danlu_merge": json.dumps(note, ensure_ascii=False)}  # as A1111 files, no ss_*
    atomic_save_safetensors(out, {k: v.contiguous() for k, v in tensors.items()}, metadata)
