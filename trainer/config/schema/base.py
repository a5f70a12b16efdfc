"""Building blocks of the config schema: a field carries its GUI placement and help in English and Chinese."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from trainer.common.errors import RuleError


class SchemaPart(BaseModel):
    """One area of the config; TrainConfig combines all of them into one flat mapping."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def field(default: Any, tab: str, group: str, help: str, help_zh: str, *, advanced: bool = False,
          metadata: bool | str = True, machine: bool = False, path: str | None = None, **constraints: Any) -> Any:
    """A schema field with its GUI placement (tab, group, advanced) and help text in both languages.

    help: what it does, typical values, its effect on the images. metadata=False keeps a value out of the
    saved LoRA's ss_* metadata (paths, private text); a string names the ss_ key where sd-scripts' differs.
    machine=True: a value of this computer (a path): a shared preset leaves it out, applying a preset keeps the
    user's own. path: the value names a "file", a "folder" or either ("any"): the form offers a picker.
    """
    extra = {"tab": tab, "group": group, "advanced": advanced, "metadata": metadata, "machine": machine, "path": path,
             "help_zh": help_zh}
    return Field(default, description=help, json_schema_extra=extra, **constraints)


def parse_resolution(value: Any) -> tuple[int, int]:
    """'512', '512,768', 512 or [512, 768] -> (width, height), as sd-scripts' --resolution."""
    if isinstance(value, (list, tuple)):
        parts = [str(v) for v in value]
    else:
        parts = str(value).replace("x", ",").split(",")
    try:
        sizes = [int(p.strip()) for p in parts if p.strip()]
    except ValueError:
        raise RuleError("must be one number or 'width,height', e.g. 512 or 768,512",
                        zh="应为一个数字或“宽,高”，例如 512 或 768,512") from None
    if len(sizes) == 1:
        sizes *= 2
    if len(sizes) != 2 or min(sizes) < 64:
        raise RuleError("must be one number or 'width,height' with each side at least 64",
                        zh="应为一个数字或“宽,高”，每边至少 64")
    return sizes[0], sizes[1]
