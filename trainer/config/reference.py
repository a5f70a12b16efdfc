"""docs/parameters.md and docs/parameters.zh.md, generated from the config schema.

python -m trainer reference > docs/parameters.md; python -m trainer reference --lang zh > docs/parameters.zh.md
"""

from __future__ import annotations

import typing
from types import UnionType

from pydantic.fields import FieldInfo

from trainer.config import TrainConfig, field_info

TEXT = {
    "en": {"title": "Parameter reference", "tabs": {"paths": "Paths", "steps": "Steps", "effect": "Model effect",
                                                   "run": "Run"},
           "intro": ["Generated from the schema (`trainer/config/schema/`) by `python -m trainer reference`; do not edit.",
                     "Keys are kohya sd-scripts' argument names, so sd-scripts and lora-scripts configs carry over.",
                     "Advanced fields are marked *(advanced)*."],
           "header": "| key | type | default | allowed | what it does |", "advanced": "*(advanced)*",
           "empty": "empty"},
    "zh": {"title": "参数说明", "tabs": {"paths": "路径", "steps": "步数", "effect": "模型效果", "run": "运行"},
           "intro": ["由 `python -m trainer reference --lang zh` 根据参数定义（`trainer/config/schema/`）生成，请勿手改。",
                     "参数名与 kohya sd-scripts 一致，sd-scripts 和秋叶训练器的配置可以直接使用。",
                     "标有 *（高级）* 的是高级选项。"],
           "header": "| 参数 | 类型 | 默认值 | 取值 | 作用 |", "advanced": "*（高级）*", "empty": "留空"},
}


def parameter_reference(lang: str = "en") -> str:
    text = TEXT[lang]
    lines = [f"# {text['title']}", "", *text["intro"], ""]
    for tab, title in text["tabs"].items():
        lines += [f"## {title}", "", text["header"], "|---|---|---|---|---|"]
        for name, info in TrainConfig.model_fields.items():
            extra = field_info(name)
            if extra["tab"] != tab:
                continue
            help_text = (extra["help_zh"] if lang == "zh" else info.description).replace("|", "\\|")
            advanced = f" {text['advanced']}" if extra["advanced"] else ""
            default = text["empty"] if info.default in (None, "") else f"`{info.default}`"
            lines.append(f"| `{name}` | {_type_name(info)} | {default} | {_allowed(info)} | "
                         f"{help_text}{advanced} |")
        lines.append("")
    return "\n".join(lines)


def _members(info: FieldInfo) -> list:
    """The union's members without None (a plain annotation is a union of one)."""
    args = typing.get_args(info.annotation) if typing.get_origin(info.annotation) in (typing.Union, UnionType) else ()
    return [a for a in (args or [info.annotation]) if a is not type(None)]


def _choices(info: FieldInfo) -> tuple:
    return tuple(c for m in _members(info) if typing.get_origin(m) is typing.Literal for c in typing.get_args(m))


def _type_name(info: FieldInfo) -> str:
    names = ["choice" if typing.get_origin(m) is typing.Literal else getattr(m, "__name__", str(m))
             for m in _members(info)]
    return " or ".join(dict.fromkeys(names))


def _allowed(info: FieldInfo) -> str:
    choices = _choices(info)
    if choices:
        return ", ".join(f"`{c}`" for c in choices)
    bounds = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    parts = [f"{symbol} {getattr(m, key)}" for m in info.metadata for key, symbol in bounds.items()
             if hasattr(m, key)]
    return ", ".join(parts)
