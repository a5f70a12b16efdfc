"""A try grid's settings and layout, torch-free: which LoRA files at which strengths, seeds and prompts, and which
of those five axes (file, epoch, strength, seed, prompt) run along the rows and the columns.

A file's `name` (its run's output_name, without the -000004 epoch suffix) is the file axis and its epoch the epoch
axis, so one run's epoch files, several runs' final files, or several runs' epochs all lay out as an X/Y plot.
Axes with more than one value that neither --rows nor --cols names are nested inside the rows. Defaults come from
a run folder: its base model, its epoch files, its sample prompts, its sampler and seed.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainer.common.errors import UserError
from trainer.config import SAMPLERS
from trainer.families.detect import detect_family
from trainer.families.table import FAMILIES
from trainer.training.sampling import SamplePrompt, parse_prompt_line

AXES = ("file", "epoch", "strength", "seed", "prompt")
SETTINGS_VERSION = 1  # of the settings JSON (grid.json and the PNG's text chunk)
_EPOCH_SUFFIX = re.compile(r"^(?P<name>.+)-(?P<epoch>\d{6})$")  # checkpoints.epoch_file's names
DEFAULT_STRENGTHS = (0.0, 0.4, 0.7, 1.0)
# A grid's folder (trainer/try_lora/render.py): what the CLI writes and the GUI reads.
PROGRESS_FILE, GRID_FILE, GRID_JSON = "progress.jsonl", "grid.png", "grid.json"
STOP_FILE = "STOP"  # written to ask for a stop after the current cell
# A label's words (str.format templates): grid.png's; the Try tab passes its own language's (ui/i18n.py try_label_*).
LABEL_WORDS = {"final": "final", "epoch": "epoch {epoch}", "strength": "strength {strength:g}", "seed": "seed {seed}",
               "prompt": "P{n}: {prompt}"}


@dataclass(frozen=True)
class LoraChoice:
    path: str
    name: str  # the file axis: the run's output name (the file's stem without its epoch suffix)
    epoch: int | None = None  # the epoch axis; None: a final file, or one whose epoch is unknown

    @property
    def label(self) -> str:
        return self.name if self.epoch is None else f"{self.name} e{self.epoch}"


def lora_choice(path: str | Path, epoch: int | None = None) -> LoraChoice:
    """A file as a grid's column or row: its name and epoch from sd-scripts' file naming (NAME-000004)."""
    stem = Path(path).stem
    found = _EPOCH_SUFFIX.match(stem)
    if found:
        return LoraChoice(str(path), found["name"], int(found["epoch"]) if epoch is None else epoch)
    return LoraChoice(str(path), stem, epoch)


@dataclass
class GridSpec:
    """Everything a grid depends on; `to_json` is what grid.json and the PNG's text chunk hold, and `--again`
    reads it back to render the same pixels."""

    base: str
    loras: list[LoraChoice]
    strengths: list[float] = field(default_factory=lambda: list(DEFAULT_STRENGTHS))
    seeds: list[int] = field(default_factory=lambda: [1, 2])
    prompts: list[str] = field(default_factory=lambda: ["a photo"])  # sample-prompt lines (--n, --w, ... allowed)
    rows: list[str] = field(default_factory=lambda: ["strength"])
    cols: list[str] = field(default_factory=lambda: ["file"])
    sampler: str = "euler_a"
    steps: int | None = None  # None: each prompt's --s, else 20
    cfg: float | None = None  # None: each prompt's --l, else the family's usual guidance
    width: int | None = None  # None: each prompt's --w, else the run's resolution
    height: int | None = None
    run: str | None = None  # the run folder whose config (clip_skip, v-prediction, ...) the model is loaded with

    def to_json(self) -> dict[str, Any]:
        return {"danlu_try": SETTINGS_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GridSpec:
        values = {key: value for key, value in data.items() if key in cls.__dataclass_fields__}
        values["loras"] = [LoraChoice(**item) for item in values.get("loras", [])]
        return cls(**values)

    def check(self) -> None:
        """Refuse what cannot make a grid, naming the option and what to do (before any model loads)."""
        _need(self.loras, "--lora", "no LoRA file given", "give one or more LoRA files, or --run RUN_DIR",
              "没有给出 LoRA 文件", "给出一个或多个 LoRA 文件，或用 --run 指定训练文件夹")
        _need(self.strengths and self.seeds and self.prompts, "--strengths/--seeds/--prompts",
              "strengths, seeds and prompts each need at least one value", "e.g. --strengths 0,0.5,1 --seeds 1,2",
              "强度、种子、提示词都至少要有一个", "例如 --strengths 0,0.5,1 --seeds 1,2")
        if self.sampler not in SAMPLERS:
            raise UserError(f"--sampler: '{self.sampler}' is not a sampler", "one of " + ", ".join(SAMPLERS),
                            zh=f"--sampler：没有 '{self.sampler}' 这个采样器", hint_zh="可选：" + ", ".join(SAMPLERS))
        for option, value in (("--strengths", self.strengths), ("--seeds", self.seeds)):
            if len(set(value)) != len(value):
                raise UserError(f"{option}: a value is given twice", "give each value once",
                                zh=f"{option}：有重复的值", hint_zh="每个值只写一次")
        for option, value, low, high in (("--steps", self.steps, 1, 1000), ("--cfg", self.cfg, 0, 100),
                                         ("--width", self.width, 64, 8192), ("--height", self.height, 64, 8192)):
            if value is not None and not low <= value <= high:
                raise UserError(f"{option}: {value:g} is out of range", f"give a number from {low} to {high}",
                                zh=f"{option}：{value:g} 超出范围", hint_zh=f"请给出 {low} 到 {high} 之间的数")
        _check_axes(self.rows, self.cols)
        for line in self.prompts:
            parse_prompt_line(line, (512, 512))  # a bad option is refused here, not after the model loaded
        self._check_files()

    def _check_files(self) -> None:
        missing = [lora.path for lora in self.loras if not Path(lora.path).is_file()]
        if missing:
            raise UserError(f"--lora: '{missing[0]}' does not exist" + (f" (and {len(missing) - 1} more)"
                                                                         if len(missing) > 1 else ""),
                            "give the path of a LoRA file (.safetensors)", zh=f"--lora：'{missing[0]}' 不存在",
                            hint_zh="请给出 LoRA 文件（.safetensors）的路径")
        if not self.run and detect_family(self.base) is None:  # a run's config may name its family (a Hub id)
            labels = ", ".join(family.label for family in FAMILIES.values())
            raise UserError(f"--base: cannot tell which model '{self.base}' is",
                            f"give a checkpoint (.safetensors) or diffusers model folder of {labels}",
                            zh=f"--base：认不出 '{self.base}' 是哪种模型",
                            hint_zh=f"请给出 {labels} 的模型文件（.safetensors）或 diffusers 模型文件夹")

    # --- the layout ---------------------------------------------------------------------------------------
    def axis_values(self, axis: str) -> list[Any]:
        """The values of one axis in grid order (files and epochs as the files were given, epochs sorted)."""
        if axis == "file":
            return list(dict.fromkeys(lora.name for lora in self.loras))
        if axis == "epoch":
            epochs = {lora.epoch for lora in self.loras}
            return sorted(epochs - {None}) + ([None] if None in epochs else [])
        return {"strength": self.strengths, "seed": self.seeds, "prompt": list(range(len(self.prompts)))}[axis]

    def layout(self) -> tuple[list[str], list[str]]:
        """(row axes, column axes): as asked, and every other axis with several values nested in the rows."""
        rest = [axis for axis in AXES if axis not in self.rows + self.cols and len(self.axis_values(axis)) > 1]
        return list(self.rows) + rest, list(self.cols)

    def cells(self) -> list[Cell]:
        """Every cell, row by row; a file/epoch pair no file has leaves its place empty."""
        row_axes, col_axes = self.layout()
        row_keys, col_keys = self._keys(row_axes), self._keys(col_axes)
        out = []
        for index, lora in enumerate(self.loras):
            for strength, seed, prompt in itertools.product(self.strengths, self.seeds, range(len(self.prompts))):
                values = {"file": lora.name, "epoch": lora.epoch, "strength": strength, "seed": seed,
                          "prompt": prompt}
                row = row_keys.index(tuple(values[a] for a in row_axes))
                col = col_keys.index(tuple(values[a] for a in col_axes))
                out.append(Cell(index, strength, seed, prompt, row, col))
        out.sort(key=lambda cell: (cell.row, cell.col))
        if len({(cell.row, cell.col) for cell in out}) != len(out):
            raise UserError("two files have the same name and epoch: their cells would overlap",
                            "rename one of the files, or give them from different runs",
                            zh="两个文件的名字和轮数相同，格子会重叠", hint_zh="给其中一个改名")
        return out

    def _keys(self, axes: list[str]) -> list[tuple]:
        keys = list(itertools.product(*(self.axis_values(axis) for axis in axes)))
        if "file" in axes and "epoch" in axes:  # only the pairs some file has
            pairs = {(lora.name, lora.epoch) for lora in self.loras}
            at = axes.index("file"), axes.index("epoch")
            keys = [key for key in keys if (key[at[0]], key[at[1]]) in pairs]
        return keys

    def labels(self, axes: list[str], words: Mapping[str, str] = LABEL_WORDS) -> list[list[str]]:
        """Each row's (or column's) label, one text per axis, worded by `words` (LABEL_WORDS' keys: the PNG's
        English, or the page's language from ui/i18n.py)."""
        return [[self.value_label(axis, value, words) for axis, value in zip(axes, key)] for key in self._keys(axes)]

    def value_label(self, axis: str, value: Any, words: Mapping[str, str] = LABEL_WORDS) -> str:
        if axis == "epoch":
            return words["final"] if value is None else words["epoch"].format(epoch=value)
        if axis == "prompt":
            return words["prompt"].format(n=value + 1, prompt=self.prompt(value).prompt)
        if axis in ("strength", "seed"):
            return words[axis].format(**{axis: value})
        return str(value)  # a file: its name

    def prompt(self, index: int, default_size: tuple[int, int] = (512, 512)) -> SamplePrompt:
        """Prompt `index` with the grid's --steps, --cfg, --width and --height over its own options."""
        spec = parse_prompt_line(self.prompts[index], default_size)
        for name, value in (("steps", self.steps), ("scale", self.cfg), ("width", self.width),
                            ("height", self.height)):
            if value is not None:
                setattr(spec, name, value)
        spec.width, spec.height = spec.width // 8 * 8, spec.height // 8 * 8
        return spec


@dataclass(frozen=True)
class Cell:
    lora: int  # index into GridSpec.loras
    strength: float
    seed: int
    prompt: int  # index into GridSpec.prompts
    row: int
    col: int


def _need(value: Any, option: str, message: str, hint: str, zh: str, hint_zh: str) -> None:
    if not value:
        raise UserError(f"{option}: {message}", hint, zh=f"{option}：{zh}", hint_zh=hint_zh)


def _check_axes(rows: list[str], cols: list[str]) -> None:
    for option, axes in (("--rows", rows), ("--cols", cols)):
        unknown = [axis for axis in axes if axis not in AXES]
        if unknown or not axes:
            raise UserError(f"{option}: '{','.join(unknown) or ''}' is not an axis", "axes: " + ", ".join(AXES),
                            zh=f"{option}：'{','.join(unknown)}' 不是可选的轴", hint_zh="可选的轴：" + ", ".join(AXES))
    both = sorted(set(rows) & set(cols))
    if both or len(set(rows)) != len(rows) or len(set(cols)) != len(cols):
        raise UserError(f"--rows/--cols: {', '.join(both) or 'an axis'} is named twice",
                        "give each axis to the rows or to the columns, once",
                        zh=f"--rows/--cols：{', '.join(both) or '某个轴'} 出现了两次",
                        hint_zh="每个轴只能放在行或列里一次")


def parse_list(text: str, kind: type, option: str) -> list:
    """'0,0.4, 0.7 1' -> [0.0, 0.4, 0.7, 1.0]: commas or spaces; strengths from -2 to 3, seeds whole numbers >= 0."""
    values = []
    for item in re.split(r"[,\s，]+", text.strip()):
        if not item:
            continue
        try:
            value = kind(item)
        except ValueError:
            value = None
        low, high = (-2.0, 3.0) if kind is float else (0, 2**32 - 1)
        if value is None or not low <= value <= high:  # also NaN
            what = f"a strength from {low:g} to {high:g}" if kind is float else "a whole-number seed from 0"
            raise UserError(f"{option}: '{item}' is not {what}", f"e.g. {option} " + (
                "0,0.4,0.7,1" if kind is float else "1,2"), zh=f"{option}：'{item}' 不是有效的值",
                hint_zh=f"例如 {option} " + ("0,0.4,0.7,1" if kind is float else "1,2"))
        values.append(value)
    return values
