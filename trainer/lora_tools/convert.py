"""`lora convert`: a LoRA/LoCon between kohya's layout (A1111, Forge, ComfyUI) and diffusers' (peft keys).

Module names are mapped through the family's own layer table (targets.py), so SDXL's original block numbering
and every LoCon convolution convert exactly, and tensors are moved, never recomputed: kohya -> diffusers ->
kohya gives back the same file. Alphas are kept as they are: SD files carry them in the `lora_adapter_metadata`
header diffusers' save_lora_weights writes (alpha_pattern per module), Flux files as `.alpha` keys, which
diffusers' Flux loader reads. diffusers' own kohya writer sets every alpha to the rank; this one does not.
Flux's transformer goes through flux_names.py (fused q/k/v of the original model <-> diffusers' separate layers).
"""

from __future__ import annotations

import json
from collections import Counter

import torch

from trainer.common.errors import UserError
from trainer.families.base import rank_and_alpha
from trainer.families.flux_names import (
    FLUX_PREFIX,
    diffusers_flux_state_dict,
    kohya_flux_state_dict,
    peft_state_from_kohya_flux,
)
from trainer.families.table import FAMILIES
from trainer.lora_tools.keys import DIFFUSERS_METADATA, LoraFile, PeftModule, peft_modules
from trainer.lora_tools.targets import Target

Tensors = dict[str, torch.Tensor]
FLUX_FUSED = ("_img_attn_qkv", "_txt_attn_qkv", "_linear1")


def to_diffusers(lora: LoraFile, table: dict[str, Target]) -> tuple[Tensors, dict[str, str]]:
    lora.require_kohya("convert --to diffusers")
    _only_lora(lora)
    tensors, rest, spec = {}, dict(lora.tensors), FAMILIES[lora.family]
    if spec.fused_qkv:
        tensors.update(_flux_to_diffusers(rest))
    configs: dict[str, dict] = {}
    unmapped = []
    for name, module in _modules(rest).items():
        target = table.get(name)
        if target is None or len(target.paths) != 1:
            unmapped.append(name)
            continue
        stem = f"{target.component}.{target.paths[0]}"
        tensors[f"{stem}.lora_A.weight"] = module["lora_down.weight"]
        tensors[f"{stem}.lora_B.weight"] = module["lora_up.weight"]
        alpha = float(module["alpha"]) if "alpha" in module else float(module["lora_down.weight"].shape[0])
        if spec.alpha_keys:  # diffusers' Flux loader reads alphas from keys
            tensors[f"{stem}.alpha"] = torch.tensor(alpha)
        configs.setdefault(target.component, {})[target.paths[0]] = (module["lora_down.weight"].shape[0], alpha)
    _refuse_unmapped(lora, unmapped)
    metadata = {k: v for k, v in lora.metadata.items() if not k.startswith("sshs_")}
    if configs and not spec.alpha_keys:
        metadata[DIFFUSERS_METADATA] = json.dumps(_adapter_metadata(configs), sort_keys=True)
    return tensors, metadata


def to_kohya(lora: LoraFile, table: dict[str, Target]) -> tuple[Tensors, dict[str, str]]:
    if lora.layout == "kohya":
        raise UserError(f"{lora.path}: already in kohya's layout", "use --to diffusers to convert it the other way",
                        zh=f"{lora.path}：已经是 kohya 格式", hint_zh="要反向转换请用 --to diffusers")
    names = {(t.component, t.paths[0]): name for name, t in table.items() if len(t.paths) == 1}
    modules = peft_modules(lora)
    tensors: Tensors = {}
    spec = FAMILIES[lora.family]
    if spec.fused_qkv:
        tensors.update(_flux_to_kohya(lora, [m for m in modules if m.component == spec.denoiser]))
        modules = [m for m in modules if m.component != spec.denoiser]
    unmapped = []
    for module in modules:
        name = _kohya_name(names, module)
        if name is None:
            unmapped.append(f"{module.component}.{module.path}")
            continue
        tensors[f"{name}.lora_down.weight"] = module.down
        tensors[f"{name}.lora_up.weight"] = module.up
        tensors[f"{name}.alpha"] = torch.tensor(module.alpha).to(module.down.dtype)  # the real alpha, not the rank
    _refuse_unmapped(lora, unmapped)
    metadata = {k: v for k, v in lora.metadata.items() if k != DIFFUSERS_METADATA and not k.startswith("sshs_")}
    return tensors, metadata


def _only_lora(lora: LoraFile) -> None:
    kind = lora.network_type()
    other = [m.name for m in lora.modules.values() if not m.kohya or "lora_mid.weight" in m.weights]
    if not kind.kohya_keys or other:
        raise UserError(f"{lora.path}: convert handles LoRA and LoCon (lora_down/lora_up) modules; "
                        f"{len(other)} module(s) here are not, e.g. {other[0] if other else kind.name}",
                        "LoHa and LoKr files stay in LyCORIS' layout, which A1111, ComfyUI and diffusers read",
                        zh=f"{lora.path}：转换只支持 LoRA 和 LoCon（lora_down/lora_up）模块；"
                        f"这里有 {len(other)} 个不是，"
                        f"例如 {other[0] if other else kind.name}",
                        hint_zh="LoHa 和 LoKr 文件保持 LyCORIS 格式即可，A1111、ComfyUI 和 diffusers 都能读")


def _modules(tensors: Tensors) -> dict[str, Tensors]:
    modules: dict[str, Tensors] = {}
    for key, tensor in tensors.items():
        name, _, suffix = key.partition(".")
        modules.setdefault(name, {})[suffix] = tensor
    return modules


def _refuse_unmapped(lora: LoraFile, unmapped: list[str]) -> None:
    if unmapped:
        raise UserError(f"{lora.path}: {len(unmapped)} module(s) name no layer of a {lora.family} model, e.g. "
                        f"{unmapped[0]}", "check the file is for this model family; for a model whose layout "
                        "differs from the standard one, give its diffusers folder with --base",
                        zh=f"{lora.path}：有 {len(unmapped)} 个模块在 {lora.family} 模型里找不到对应的层，"
                        f"例如 {unmapped[0]}",
                        hint_zh="请确认文件是给这类模型的；模型结构与标准不同时，请用 --base 给出它的 diffusers 文件夹")


def _adapter_metadata(configs: dict[str, dict[str, tuple[int, float]]]) -> dict:
    """diffusers' packed LoraConfig per component: the common rank/alpha plus a pattern for every other module."""
    out: dict = {}
    for component, modules in configs.items():
        rank = Counter(r for r, _ in modules.values()).most_common(1)[0][0]
        alpha = Counter(a for _, a in modules.values()).most_common(1)[0][0]
        out.update({f"{component}.r": rank, f"{component}.lora_alpha": alpha,
                    f"{component}.target_modules": sorted(modules),
                    f"{component}.rank_pattern": {p: r for p, (r, _) in modules.items() if r != rank},
                    f"{component}.alpha_pattern": {p: a for p, (_, a) in modules.items() if a != alpha}})
    return out


def _kohya_name(names: dict[tuple[str, str], str], module: PeftModule) -> str | None:
    """transformers 5 dropped CLIP's `text_model.` level: files written with either path are accepted."""
    path = module.path
    alternatives = (path, path.removeprefix("text_model."), "text_model." + path)
    return next((names[(module.component, p)] for p in alternatives if (module.component, p) in names), None)


def _flux_to_diffusers(rest: Tensors) -> Tensors:
    """Pops the transformer's block modules from `rest` and returns them in diffusers' layout."""
    blocks = {k: v for k, v in rest.items() if k.startswith(f"{FLUX_PREFIX}_")}
    unfused = {k: v for k, v in blocks.items() if not any(f in k.partition(".")[0] for f in FLUX_FUSED)}
    shape = rank_and_alpha(unfused) or rank_and_alpha(blocks)
    if shape is None:
        return {}
    try:
        state, used = peft_state_from_kohya_flux(blocks, *shape)
    except ValueError as exc:
        raise UserError(f"convert: {exc}".replace("network_weights: ", ""),
                        "convert handles Flux LoRAs of one rank and alpha, as Danlu and sd-scripts write them",
                        zh=f"转换失败：{exc}".replace("network_weights: ", ""),
                        hint_zh="转换只支持单一 rank 和 alpha 的 Flux LoRA（丹炉和 sd-scripts 写出的那种）") from None
    for key in used:
        rest.pop(key)
    return diffusers_flux_state_dict(state, shape[1])


def _flux_to_kohya(lora: LoraFile, modules: list[PeftModule]) -> Tensors:
    if not modules:
        return {}
    alphas = {m.alpha for m in modules}
    if len(alphas) != 1:
        raise UserError(f"{lora.path}: the transformer's modules have different alphas {sorted(alphas)}",
                        "convert handles Flux LoRAs of one alpha, as Danlu, sd-scripts and diffusers write them",
                        zh=f"{lora.path}：transformer 各模块的 alpha 不同 {sorted(alphas)}",
                        hint_zh="转换只支持单一 alpha 的 Flux LoRA（丹炉、sd-scripts 和 diffusers 写出的那种）")
    state = {}
    for m in modules:
        state[f"{m.path}.lora_A.weight"], state[f"{m.path}.lora_B.weight"] = m.down, m.up
    try:
        out = kohya_flux_state_dict(state, alphas.pop())
    except ValueError as exc:
        raise UserError(f"{lora.path}: {exc}", "convert handles the attention and MLP layers of Flux blocks",
                        zh=f"{lora.path}：转换失败：{exc}", hint_zh="转换只支持 Flux 块里的注意力层和 MLP 层") from None
    dtype = modules[0].down.dtype
    return {k: v.to(dtype) if k.endswith(".alpha") else v for k, v in out.items()}
