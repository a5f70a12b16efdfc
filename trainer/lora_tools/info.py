"""`lora info`: what a LoRA file is (family, network type, ranks, alphas, modules) and all its metadata."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from trainer.lora_tools.keys import LoraFile, family_label, network_args, peft_modules

PARTS = {"lora_unet": "unet", "lora_te1": "text encoder 1", "lora_te2": "text encoder 2", "lora_te3": "T5",
         "lora_te": "text encoder"}  # kohya prefixes, longest first where one starts another


def summary(lora: LoraFile) -> dict[str, Any]:
    """Everything `lora info` shows, as plain data (what --json prints)."""
    shapes = _module_shapes(lora)
    return {
        "file": str(lora.path),
        "format": lora.detail,
        "layout": lora.layout,
        "family": lora.family,
        "family_label": family_label(lora.family),
        "network_type": lora.network_type().label,
        "network_module": lora.network_module or None,
        "network_args": network_args(lora.metadata),
        "modules": len(shapes),
        "modules_by_part": dict(Counter(part for part, _, _, _ in shapes)),
        "ranks": _counts(rank for _, rank, _, conv in shapes if not conv),
        "conv_ranks": _counts(rank for _, rank, _, conv in shapes if conv),
        "alphas": _counts(alpha for _, _, alpha, _ in shapes),
        "hashes": {key: value for key, value in lora.metadata.items() if key.startswith("sshs_")},
        "metadata": {key: lora.metadata[key] for key in sorted(lora.metadata)},
    }


def _module_shapes(lora: LoraFile) -> list[tuple[str, int | str, float | None, bool]]:
    """(part, rank, alpha, is 3x3 conv) per module."""
    if lora.layout == "diffusers":
        return [(m.component, m.down.shape[0], m.alpha, m.down.dim() == 4 and m.down.shape[2] * m.down.shape[3] > 1)
                for m in peft_modules(lora)]
    rows = []
    for name, module in lora.modules.items():
        part = next((label for prefix, label in PARTS.items() if name.startswith(prefix + "_")), "other")
        rank = module.rank if module.rank is not None else "full"
        alpha = module.alpha if module.alpha is not None else (module.rank if module.kohya else None)
        rows.append((part, rank, alpha, module.conv))
    return rows


def _counts(values) -> dict[str, int]:
    """value -> how many modules have it, most common first (JSON keys are strings)."""
    return {_number(value): count for value, count in Counter(values).most_common()}


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def render(info: dict[str, Any]) -> str:
    """The human-readable report: facts first, then every metadata field, JSON values pretty-printed."""
    parts = ", ".join(f"{part} {count}" for part, count in info["modules_by_part"].items())
    lines = [
        f"file:          {info['file']}",
        f"format:        {info['format']} ({info['layout']} layout)",
        f"family:        {info['family_label']}",
        f"network type:  {info['network_type']}" + (f" ({info['network_module']})" if info["network_module"] else ""),
        f"modules:       {info['modules']}" + (f" ({parts})" if parts else ""),
        f"rank:          {_spread(info['ranks'])}",
    ]
    if info["conv_ranks"]:
        lines.append(f"conv rank:     {_spread(info['conv_ranks'])}")
    lines.append(f"alpha:         {_spread(info['alphas'])}")
    if info["network_args"]:
        lines.append(f"network args:  {json.dumps(info['network_args'], ensure_ascii=False)}")
    for key, value in info["hashes"].items():
        lines.append(f"{key}: {value}")
    fields = {k: v for k, v in info["metadata"].items() if not k.startswith("sshs_")}
    lines.append(f"metadata:      {len(fields)} field(s)" if fields else "metadata:      none")
    lines += [_field(key, value) for key, value in fields.items()]
    return "\n".join(lines)


def _spread(counts: dict[str, int]) -> str:
    if not counts:
        return "-"
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{value} ({count} modules)" for value, count in counts.items())


def _field(key: str, value: str) -> str:
    """One metadata field; JSON objects and lists (ss_tag_frequency, ss_dataset_dirs ...) indented in full."""
    text = value.strip()
    if text.startswith(("{", "[")):
        try:
            pretty = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            pretty = value
        return f"  {key}:\n" + "\n".join("    " + line for line in pretty.splitlines())
    return f"  {key}: {value}"
