"""Preview images during training, from sd-scripts-style prompt lines.

A line is a prompt followed by options: --n negative prompt, --w width, --h height, --s steps,
--l guidance scale, --d seed. Lines starting with # are comments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import diffusers

from trainer.common.errors import UserError
from trainer.config import SAMPLERS


@dataclass
class SamplePrompt:
    prompt: str
    negative: str = ""
    width: int = 512
    height: int = 512
    steps: int = 20
    scale: float | None = None  # None: the family's usual value (7 for SD's CFG, 3.5 for Flux.1 dev's guidance)
    seed: int | None = None


def parse_prompt_line(line: str, default_size: tuple[int, int]) -> SamplePrompt:
    parts = re.split(r"\s--(?=[a-z]\s)", " " + line.strip())
    spec = SamplePrompt(parts[0].strip(), width=default_size[0], height=default_size[1])
    setters = {"n": ("negative", str), "w": ("width", int), "h": ("height", int), "s": ("steps", int),
               "l": ("scale", float), "d": ("seed", int)}
    for part in parts[1:]:
        flag, _, value = part.partition(" ")
        name, convert = setters[flag]
        try:
            setattr(spec, name, convert(value.strip()))
        except ValueError:
            raise UserError(f"sample_prompts: '--{flag} {value.strip()}' in '{line.strip()}' is not a "
                            f"valid {name}") from None
    spec.width, spec.height = (max(64, spec.width // 8 * 8), max(64, spec.height // 8 * 8))
    return spec


def load_prompts(value: str | list[str] | None, default_size: tuple[int, int]) -> list[SamplePrompt]:
    if value is None:
        return []
    if isinstance(value, str):
        path = Path(value).expanduser()
        if not path.is_file():
            raise UserError(f"sample_prompts: file '{value}' does not exist",
                            "give a text file with one prompt a line, or a list of prompts")
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    else:
        lines = value
    lines = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return [parse_prompt_line(line, default_size) for line in lines]


def make_sampler(name: str, training_scheduler_config) -> object:
    class_name, kwargs = SAMPLERS[name]
    return getattr(diffusers, class_name).from_config(training_scheduler_config, **kwargs)
