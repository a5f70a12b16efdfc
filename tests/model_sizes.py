"""Parameter counts of the full-size models, built from the shipped configs (trainer/families/configs/) on the meta
device: no weights, no downloads. trainer/families/configs/sizes.json stores them for the torch-free memory
estimate (trainer/checks/memory.py); tests/test_memory_estimate.py checks it still matches.

Regenerate after changing a shipped config or a family's LoRA targets:
    PYTHONPATH=. .venv/bin/python tests/model_sizes.py
"""

from __future__ import annotations

import json
import re
from typing import Any

from trainer.checks.memory import SIZES_FILE
from trainer.families.flux_names import FLUX_TARGETS, T5_TARGETS
from trainer.families.loading import SHIPPED_CONFIGS
from trainer.families.sd import TEXT_ENCODER_TARGETS, UNET_CONV_TARGETS, UNET_RESNET_TARGETS, UNET_TARGETS
from trainer.families.single_file import empty_model
from trainer.families.table import FAMILIES

# Each component's LoRA target groups (the families' own lists): trainer/checks/memory.py reads them by name.
_UNET = {"attention": UNET_TARGETS, "resnet": UNET_RESNET_TARGETS, "conv": UNET_CONV_TARGETS}
TARGETS: dict[str, dict[str, list[str] | str]] = {
    "unet": _UNET, "transformer": {"attention": FLUX_TARGETS}, "vae": {},
    "CLIP-L": {"attention": TEXT_ENCODER_TARGETS}, "OpenCLIP-H": {"attention": TEXT_ENCODER_TARGETS},
    "OpenCLIP-G": {"attention": TEXT_ENCODER_TARGETS}, "T5-XXL": {"attention": T5_TARGETS},
}


def _matches(name: str, targets: list[str] | str) -> bool:
    """peft's target_modules rule: a string is a full-match regular expression, a list names module suffixes."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def component_sizes(model: Any, groups: dict[str, list[str] | str], blocks: tuple[str, ...] = ()) -> dict[str, Any]:
    """params; linear_weights (what fp8_base/quantize_base store compactly); per target group its layer count
    and per_rank: the LoRA parameters per unit of rank, sum of in_features x kernel + out_features; per block list
    that blocks_to_swap swaps (Family.swappable_blocks) its block count and parameters."""
    import torch

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    sizes: dict[str, Any] = {"params": sum(p.numel() for p in model.parameters()),
                             "linear_weights": sum(m.weight.numel() for m in linears)}
    lora = {}
    for group, targets in groups.items():
        layers = [m for name, m in model.named_modules()
                  if isinstance(m, torch.nn.Linear | torch.nn.Conv2d) and _matches(name, targets)]
        per_rank = sum(m.weight[0].numel() + m.weight.shape[0] for m in layers)
        lora[group] = {"layers": len(layers), "per_rank": per_rank}
    if lora:
        sizes["lora"] = lora
    if blocks:
        sizes["blocks"] = {name: {"count": len(getattr(model, name)),
                                  "params": sum(p.numel() for p in getattr(model, name).parameters())}
                           for name in blocks}
    return sizes


def model_sizes(family: str) -> dict[str, Any]:
    """Every component's sizes of the family's standard shipped config."""
    spec = FAMILIES[family]
    config_dir = str(SHIPPED_CONFIGS / spec.shipped_configs[0])
    parts = {spec.denoiser: TARGETS[spec.denoiser], "vae": {}}
    parts |= {encoder.component: TARGETS[encoder.model] for encoder in spec.text_encoders}
    return {name: component_sizes(empty_model(family, name, config_dir), groups,
                                  spec.swappable_blocks if name == spec.denoiser else ())
            for name, groups in parts.items()}


def all_sizes() -> dict[str, Any]:
    return {family: model_sizes(family) for family in FAMILIES}


if __name__ == "__main__":
    SIZES_FILE.write_text(json.dumps(all_sizes(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {SIZES_FILE}")
