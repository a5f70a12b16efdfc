"""docs/parameters.md, generated from the config schema (python -m trainer reference > docs/parameters.md)."""

from __future__ import annotations

import typing

from pydantic.fields import FieldInfo

from .config import TrainConfig, field_info

TABS = {"paths": "Paths", "steps": "Steps", "effect": "Model effect", "run": "Run"}


def parameter_reference() -> str:
    lines = ["# Parameter reference", "",
             "Generated from `trainer/config.py` by `python -m trainer reference`; do not edit by hand.",
             "Keys are kohya sd-scripts' argument names, so sd-scripts and lora-scripts configs carry over.",
             "Advanced fields are marked *(advanced)*.", ""]
    for tab, title in TABS.items():
        lines += [f"## {title}", "", "| key | type | default | allowed | what it does |", "|---|---|---|---|---|"]
        for name, info in TrainConfig.model_fields.items():
            extra = field_info(name)
            if extra["tab"] != tab:
                continue
            advanced = " *(advanced)*" if extra["advanced"] else ""
            lines.append(f"| `{name}` | {_type_name(info)} | {_default(info)} | {_allowed(info)} | "
                         f"{info.description}{advanced} |")
        lines.append("")
    return "\n".join(lines)


def _type_name(info: FieldInfo) -> str:
    args = [a for a in typing.get_args(info.annotation) if a is not type(None)]
    if typing.get_origin(info.annotation) is typing.Literal:
        return "choice"
    names = [getattr(a, "__name__", str(a)) for a in (args or [info.annotation])]
    if any(typing.get_origin(a) is typing.Literal for a in args):
        return "choice"
    return " or ".join("list" if n == "list" else n for n in names)


def _default(info: FieldInfo) -> str:
    return "empty" if info.default in (None, "") else f"`{info.default}`"


def _allowed(info: FieldInfo) -> str:
    choices = typing.get_args(info.annotation) if typing.get_origin(info.annotation) is typing.Literal else ()
    if choices:
        return ", ".join(f"`{c}`" for c in choices)
    bounds = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    parts = [f"{symbol} {getattr(m, key)}" for m in info.metadata for key, symbol in bounds.items()
             if hasattr(m, key)]
    return ", ".join(parts)
