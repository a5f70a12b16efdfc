"""How each config field appears in the form: its widget kind, choices and range, and the value conversions.

Everything is read from the schema (trainer/schema/): the annotation picks the widget, pydantic's constraints give
the range, field_info gives tab, group and the advanced flag. No Gradio here, so the mapping is tested directly:
`to_config(spec, to_form(spec, value)) == value` for every field.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from types import UnionType
from typing import Any

from trainer.config import TrainConfig, field_info

# Widget kinds: checkbox (bool), tristate (bool | None: empty = the default behaviour), choice (fixed choices),
# open_choice (choices or any text, e.g. an optimizer class path), number, text (one line), lines (one item a line),
# rates (one number or several, comma-separated), prompts (a prompt file, or one prompt a line).
PROMPT_FILE_SUFFIXES = (".txt", ".toml", ".json", ".jsonl")


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str
    tab: str
    group: str
    advanced: bool
    default: Any
    choices: tuple = ()
    optional: bool = False  # empty is allowed (None)
    integer: bool = False  # whole numbers only
    mixed: bool = False  # int | float: a whole number >= 1 counts (lr_warmup_steps: 10 steps, 0.1 a fraction)
    path: str | None = None  # the value names a "file", a "folder" or either ("any"): the form offers a picker


def _members(annotation: Any) -> list:
    if typing.get_origin(annotation) in (typing.Union, UnionType):
        return list(typing.get_args(annotation))
    return [annotation]


def _kind(name: str, members: list) -> tuple[str, tuple]:
    literals = [c for m in members if typing.get_origin(m) is typing.Literal for c in typing.get_args(m)]
    plain = [m for m in members if typing.get_origin(m) is not typing.Literal and m is not type(None)]
    if literals:
        return ("open_choice" if str in plain else "choice"), tuple(c for c in literals if c is not None)
    if plain == [bool]:
        return ("tristate" if type(None) in members else "checkbox"), ()
    if all(m in (int, float) for m in plain):
        return "number", ()
    if name == "sample_prompts":
        return "prompts", ()
    if any(typing.get_origin(m) is list for m in plain):
        return ("rates" if float in plain else "lines"), ()
    return "text", ()


def field_spec(name: str) -> FieldSpec:
    info, extra = TrainConfig.model_fields[name], field_info(name)
    members = _members(info.annotation)
    kind, choices = _kind(name, members)
    optional = type(None) in members or any(c is None for m in members if typing.get_origin(m) is typing.Literal
                                            for c in typing.get_args(m))
    return FieldSpec(name, kind, extra["tab"], extra["group"], extra["advanced"], info.default, choices, optional,
                     integer=kind == "number" and float not in members,
                     mixed=kind == "number" and int in members and float in members, path=extra.get("path"))


FIELD_SPECS: dict[str, FieldSpec] = {name: field_spec(name) for name in TrainConfig.model_fields}


def to_form(spec: FieldSpec, value: Any) -> Any:
    """A config value as its widget shows it."""
    if spec.kind == "checkbox":
        return bool(value)
    if spec.kind == "tristate":
        return "" if value is None else ("true" if value else "false")
    if spec.kind == "number":
        return value
    if value is None:
        return ""
    if spec.kind in ("lines", "prompts") and isinstance(value, list):
        return "\n".join(str(v) for v in value)
    if spec.kind == "rates" and isinstance(value, list):
        return ", ".join(f"{v:g}" for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def to_config(spec: FieldSpec, value: Any) -> Any:
    """A widget's value as the config takes it; validation (TrainConfig) judges it afterwards."""
    if spec.kind == "checkbox":
        return bool(value)
    if spec.kind == "tristate":
        return {"": None, "true": True, "false": False}.get(str(value or ""), value)
    if spec.kind == "number":
        return _number(spec, value)
    text = "" if value is None else str(value).strip()
    if not text and spec.optional:
        return None
    if spec.kind == "lines":
        return [line.strip() for line in text.splitlines() if line.strip()]
    if spec.kind == "rates":
        return _rates(text)
    if spec.kind == "prompts":
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        single_file = len(lines) == 1 and lines[0].lower().endswith(PROMPT_FILE_SUFFIXES)
        return lines[0] if single_file else lines
    if spec.kind == "choice" and spec.choices and isinstance(spec.choices[0], int):
        return int(text) if text.isdigit() else text
    return text


def _number(spec: FieldSpec, value: Any) -> Any:
    if value is None or value == "":
        return None if spec.optional else spec.default
    if isinstance(value, float) and value.is_integer() and (spec.integer or (spec.mixed and value >= 1)):
        return int(value)
    return value


def _rates(text: str) -> Any:
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    try:
        rates = [float(p) for p in parts]
    except ValueError:
        return text  # validation names the field and says what is allowed
    return rates[0] if len(rates) == 1 else rates


def form_values(config: dict[str, Any]) -> list[Any]:
    """The widgets' values for a (partial) config, in schema order; missing keys take their defaults."""
    return [to_form(spec, config.get(name, spec.default)) for name, spec in FIELD_SPECS.items()]


def config_from_form(values: list[Any]) -> dict[str, Any]:
    """The config mapping the form holds, in schema order (the inverse of form_values)."""
    return {name: to_config(spec, value) for (name, spec), value in zip(FIELD_SPECS.items(), values)}
