"""Preview images during training, from sd-scripts-style prompt lines.

A line is a prompt followed by options: --n negative prompt, --w width, --h height, --s steps,
--l guidance scale, --d seed. Lines starting with # are comments. Torch-free but for make_sampler, so `check`
parses the prompts a training will use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from trainer.common.errors import UserError
from trainer.common.text import read_user_text
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
    guidance: float | None = None  # --g: sd-scripts' distilled guidance (Flux.1 dev), before --l for Flux


# option letter -> (SamplePrompt field, type, lowest, highest value)
OPTIONS: dict[str, tuple[str, type, float, float]] = {
    "n": ("negative", str, 0, 0), "w": ("width", int, 64, 8192), "h": ("height", int, 64, 8192),
    "s": ("steps", int, 1, 1000), "l": ("scale", float, 0, 100), "d": ("seed", int, 0, 2**32 - 1),
    "g": ("guidance", float, 0, 100)}
# sd-scripts' options Danlu's previews do not use (per-prompt sampler, ControlNet image, CFG truncation and
# renormalisation, flow shift): accepted without effect, so that sd-scripts' prompt files work as they are.
IGNORED_OPTIONS = ("ss", "cn", "i", "ctr", "rcfg", "fs")
_OPTION = re.compile(r"\s--(?=[A-Za-z]+(?:\s|$))")


def parse_prompt_line(line: str, default_size: tuple[int, int]) -> SamplePrompt:
    """One prompt line as a SamplePrompt; a UserError of sample_prompts names an unknown option or a bad value."""
    parts = _OPTION.split(" " + line.strip())
    spec = SamplePrompt(parts[0].strip(), width=default_size[0], height=default_size[1])
    for part in parts[1:]:
        flag, _, value = part.partition(" ")
        if flag not in IGNORED_OPTIONS:
            setattr(spec, *_option_value(flag, value.strip(), line.strip()))
    spec.width, spec.height = spec.width // 8 * 8, spec.height // 8 * 8
    return spec


def _option_value(flag: str, value: str, line: str) -> tuple[str, object]:
    if flag not in OPTIONS:
        raise UserError(f"'--{flag}' in '{line}' is not a prompt option", "the options are " + ", ".join(
            f"--{letter} ({name})" for letter, (name, *_) in OPTIONS.items()), "sample_prompts",
            zh=f"'{line}' 里的 '--{flag}' 不是提示词选项",
            hint_zh="可用的选项：" + "、".join(f"--{letter}（{name}）" for letter, (name, *_) in OPTIONS.items()))
    name, convert, low, high = OPTIONS[flag]
    if convert is str:
        return name, value
    try:
        number = convert(value)
    except ValueError:
        number = None
    if number is None or not low <= number <= high:  # also NaN
        raise UserError(f"'--{flag} {value}' in '{line}' is not a valid {name}",
                        f"give a number from {convert(low)} to {convert(high)}", "sample_prompts",
                        zh=f"'{line}' 里的 '--{flag} {value}' 不是有效的 {name}",
                        hint_zh=f"请给 {convert(low)} 到 {convert(high)} 之间的数")
    return name, number


def load_prompts(value: str | list[str] | None, default_size: tuple[int, int]) -> list[SamplePrompt]:
    """The prompts of a sample_prompts value: a file's lines (read as trainer/common/text.py reads) or a list."""
    if value is None:
        return []
    if isinstance(value, str):
        path = Path(value).expanduser()
        if not path.exists():
            raise UserError(f"file '{value}' does not exist", "give a text file with one prompt a line, or a list "
                            "of prompts", "sample_prompts", zh=f"文件 '{value}' 不存在",
                            hint_zh="请给一个每行一条提示词的文本文件，或提示词列表")
        lines = read_user_text(path, "sample_prompts").splitlines()
    else:
        lines = value
    lines = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return [parse_prompt_line(line, default_size) for line in lines]


def make_sampler(name: str, training_scheduler_config) -> object:
    import diffusers  # here, so `check` and the GUI read prompts without it

    class_name, kwargs = SAMPLERS[name]
    return getattr(diffusers, class_name).from_config(training_scheduler_config, **kwargs)
