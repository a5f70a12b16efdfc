"""A LoRA file as modules: which layout its keys use, which network type each module is, and its weight update.

Layouts: kohya (`<module>.lora_down.weight` / `.lora_up.weight` / `.alpha`, and the LyCORIS keys LoHa
`hada_w1_a ...` and LoKr `lokr_w1 ...` under the same module names), and diffusers/peft
(`<component>.<module path>.lora_A.weight` / `.lora_B.weight`, alphas as `.alpha` keys or in the
`lora_adapter_metadata` header that diffusers' save_lora_weights writes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainer.adapters.spec import FileFacts, NetworkType
from trainer.adapters.types import layout_of, recognise
from trainer.common.errors import UserError
from trainer.families.detect import cut_short, describe_checkpoint
from trainer.families.table import FAMILIES, FAMILY_LABELS
from trainer.training.export import load_lora

BASE_VERSIONS = {family.base_model_version: name for name, family in FAMILIES.items()}  # ss_base_model_version
DIFFUSERS_METADATA = "lora_adapter_metadata"  # diffusers' LORA_ADAPTER_METADATA_KEY


@dataclass
class Module:
    """One adapted layer of a kohya-layout file: its weights by suffix (lora_down.weight, hada_w1_a, alpha, ...)."""

    name: str
    weights: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def key_layout(self) -> NetworkType | None:
        """The network type whose keys its weights are in (LoRA's lora_down, LoHa's hada_*, ...); None if not one."""
        return layout_of(self.weights)

    @property
    def kohya(self) -> bool:
        """kohya's lora_down/lora_up keys (LoRA, LoCon, DyLoRA)."""
        return self.key_layout is not None and self.key_layout.kohya_keys

    @property
    def conv(self) -> bool:
        """A 3x3 (or larger) convolution: what makes a LoRA a LoCon."""
        down = self.weights.get(self.key_layout.kernel_key) if self.key_layout else None
        return down is not None and down.dim() == 4 and down.shape[2] * down.shape[3] > 1

    @property
    def rank(self) -> int | None:
        """The rank loaders divide alpha by; None for a LoKr of full matrices (its alpha is ignored)."""
        return self.key_layout.file_rank(self.weights) if self.key_layout else None

    @property
    def alpha(self) -> float | None:
        alpha = self.weights.get("alpha")
        return float(alpha) if alpha is not None else None

    @property
    def scale(self) -> float:
        """alpha / rank as A1111, ComfyUI and sd-scripts apply it; a missing alpha means alpha = rank."""
        rank, alpha = self.rank, self.alpha
        return 1.0 if rank is None or alpha is None else alpha / rank

    def delta(self) -> torch.Tensor:
        """The update this module adds to its layer's weight (scale included), float32, 2-D or 4-D."""
        w = {key: value.float() for key, value in self.weights.items()}
        if "dora_scale" in w:  # DoRA rescales the merged weight's columns: not a plain additive update
            raise UserError(f"{self.name}: a DoRA module (dora_scale) is not supported", "merge LoRA, LoCon, LoHa "
                            "or LoKr files", zh=f"{self.name}：不支持 DoRA 模块（dora_scale）",
                            hint_zh="请合并 LoRA、LoCon、LoHa 或 LoKr 文件")
        if self.key_layout is None:
            raise UserError(f"{self.name}: keys {sorted(self.weights)} are of no network type Danlu knows",
                            zh=f"{self.name}：键 {sorted(self.weights)} 不属于丹炉认识的任何网络类型")
        return self.key_layout.file_delta(w, self.name) * self.scale


@dataclass
class LoraFile:
    path: Path
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    family: str | None
    layout: str  # "kohya" | "diffusers"
    detail: str  # what describe_checkpoint says of it

    @property
    def modules(self) -> dict[str, Module]:
        """kohya layout: module name -> Module (the name is everything before the first dot)."""
        modules: dict[str, Module] = {}
        for key, tensor in self.tensors.items():
            name, _, suffix = key.partition(".")
            modules.setdefault(name, Module(name)).weights[suffix] = tensor
        return modules

    @property
    def network_module(self) -> str:
        return self.metadata.get("ss_network_module", "")

    def network_type(self) -> NetworkType:
        """From the keys, then ss_network_module and ss_network_args (each type's `recognises`)."""
        modules = self.modules.values() if self.layout == "kohya" else []
        layouts = frozenset(module.key_layout.name for module in modules if module.key_layout)
        conv = any(module.conv for module in modules)
        return recognise(FileFacts(layouts, self.network_module, network_args(self.metadata), conv))

    def require_kohya(self, action: str) -> None:
        if self.layout != "kohya":
            raise UserError(f"{self.path}: {action} needs a LoRA in kohya's layout; this one is in diffusers' layout",
                            f"convert it first: python -m trainer lora convert {self.path} --to kohya -o OUT",
                            zh=f"{self.path}：{action} 需要 kohya 格式的 LoRA；这个是 diffusers 格式",
                            hint_zh=f"请先转换：python -m trainer lora convert {self.path} --to kohya -o OUT")


def network_args(metadata: dict[str, str]) -> dict[str, str]:
    try:
        args = json.loads(metadata.get("ss_network_args") or "{}")
    except ValueError:
        return {}
    return args if isinstance(args, dict) else {}


def read_lora(path: Path) -> LoraFile:
    """Open a LoRA file, refusing missing files and files that are no LoRA with one clear line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"'{path}' does not exist" if not path.exists() else f"'{path}' is a folder, not a LoRA file",
                        "give the path of a LoRA file (.safetensors, .ckpt, .pt)",
                        zh=f"'{path}' 不存在" if not path.exists() else f"'{path}' 是文件夹，不是 LoRA 文件",
                        hint_zh="请给 LoRA 文件的路径（.safetensors、.ckpt、.pt）")
    damage = cut_short(path)
    if damage:
        raise UserError(f"'{path}' is {damage}", zh=f"'{path}' 已损坏：{damage}")
    found = describe_checkpoint(path)
    if found.kind != "lora":
        raise UserError(f"'{path}' is not a LoRA file: it is {found.detail}",
                        "give a LoRA file (kohya, LyCORIS or diffusers layout)",
                        zh=f"'{path}' 不是 LoRA 文件：它是 {found.detail}",
                        hint_zh="请给 LoRA 文件（kohya、LyCORIS 或 diffusers 格式）")
    tensors, metadata = load_lora(path)
    family = found.family or BASE_VERSIONS.get(metadata.get("ss_base_model_version", ""))
    layout = "kohya" if all(_kohya_key(key) for key in tensors) else "diffusers"
    return LoraFile(path, tensors, metadata, family, layout, found.detail)


def _kohya_key(key: str) -> bool:
    return not (".lora_A." in key or ".lora_B." in key or key.endswith((".lora_A.weight", ".lora_B.weight"))
                or (key.endswith(".alpha") and "." in key[:-len(".alpha")]))


def family_label(family: str | None) -> str:
    return FAMILY_LABELS.get(family or "", "unknown")


@dataclass
class PeftModule:
    """One adapted layer of a diffusers-layout file."""

    component: str  # unet, text_encoder, text_encoder_2, transformer
    path: str  # module path inside that component
    down: torch.Tensor  # lora_A
    up: torch.Tensor  # lora_B
    alpha: float


def peft_modules(lora: LoraFile) -> list[PeftModule]:
    """The diffusers-layout modules with their alphas: `.alpha` keys, else diffusers' adapter metadata
    (alpha_pattern, then lora_alpha), else alpha = rank (what diffusers assumes without either)."""
    configs = diffusers_metadata(lora.metadata)
    out = []
    for key, down in sorted(lora.tensors.items()):
        if not key.endswith(".lora_A.weight"):
            continue
        stem = key[:-len(".lora_A.weight")]
        component, _, path = stem.partition(".")
        up = lora.tensors.get(f"{stem}.lora_B.weight")
        if up is None:
            raise UserError(f"{lora.path}: {stem} has lora_A but no lora_B", "the file is damaged or incomplete",
                            zh=f"{lora.path}：{stem} 有 lora_A 却没有 lora_B", hint_zh="文件已损坏或不完整")
        alpha = lora.tensors.get(f"{stem}.alpha")
        if alpha is None:
            pattern = configs.get(f"{component}.alpha_pattern") or {}
            alpha = pattern.get(path, configs.get(f"{component}.lora_alpha", down.shape[0]))
        out.append(PeftModule(component, path, down, up, float(alpha)))
    return out


def diffusers_metadata(metadata: dict[str, str]) -> dict:
    """diffusers' adapter configs: {"unet.r": 4, "unet.lora_alpha": 2, ...} as one JSON header entry."""
    raw = metadata.get(DIFFUSERS_METADATA)
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {}
