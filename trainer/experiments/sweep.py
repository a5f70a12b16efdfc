"""Side-by-side runs (a sweep), the plan: one base config, some keys varied, every combination checked.

    plan = plan_sweep(Path("my.yaml"), parse_vary(["network_dim=8,16", "learning_rate=1e-4,5e-4"]))
    print(plan.describe())
    trainer.experiments.sweep_run.run_sweep(plan)    # trains them one after another; trainer/compare.py lays them side by side

Every run makes the same previews, so they can be compared: the same prompts (a prompt file is read once, into
the list each run gets), the same seeds (a prompt without --d gets the base config's seed, so varying `seed`
changes the training, not the preview noise) and the same schedule (the sample_* keys cannot vary). Paths may
vary (two base models or two datasets are fair comparisons); only the keys in SWEEP_OWNED may not.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from trainer.common.errors import ConfigError, Problem
from trainer.common.text import read_user_text
from trainer.config import TrainConfig
from trainer.config.io import _unknown_key_problems, read_config_file, validate_config

MAX_RUNS = 64  # a typo like 10 values x 10 values should not queue days of training
Runs = list[tuple[str, dict[str, Any]]]  # (label, config) of each variation
Item = TypeVar("Item", Problem, str)  # a problem or a warning of one run
VARY = "--vary "  # what a problem of the command line's --vary starts with

_SAME_PREVIEWS = "the runs are compared by their previews, so every run makes the same ones; set it in the base config"
# Keys a sweep sets itself or needs equal in every run, with the reason the user reads.
SWEEP_OWNED = {
    "output_dir": "every run of a sweep writes to the base config's output_dir; start one sweep per folder",
    "output_name": "the sweep names each run's LoRA <output_name>-<variation>, so the files never overwrite "
                   "each other",
    **dict.fromkeys(("sample_prompts", "sample_every_n_epochs", "sample_every_n_steps", "sample_at_first",
                     "sample_sampler"), _SAME_PREVIEWS),
}
_WORDS = {"true": True, "false": False, "null": None, "none": None, "~": None}
_HAS_SEED = re.compile(r"(?:^|\s)--d\s")  # trainer/sampling.py's option syntax: " --d 42"


# --- what varies ----------------------------------------------------------------------------------------------
def parse_vary(items: list[str]) -> dict[str, list[Any]]:
    """["network_dim=8,16", "learning_rate=1e-4,5e-4"] -> {"network_dim": [8, 16], "learning_rate": [...]}.

    Raises ConfigError listing every bad item (unknown key with a did-you-mean, a key a sweep cannot vary, an
    empty or repeated value)."""
    vary: dict[str, list[Any]] = {}
    problems: list[Problem] = []
    for item in items:
        key, sep, text = (part.strip() for part in item.partition("="))
        texts = [value.strip() for value in text.split(",")]
        problem = _item_problem(item, key, sep, texts, vary)
        if problem:
            problems.append(problem)
            continue
        values = [_typed(key, value) for value in texts]
        repeated = [value for i, value in enumerate(values) if value in values[:i]]
        if repeated:
            problems.append(Problem((key,), f"{_text(repeated[0])} is listed twice", "give each value once",
                                    where=VARY, zh=f"{_text(repeated[0])} 写了两次", hint_zh="每个值只写一次"))
        vary[key] = values
    if problems:
        raise ConfigError(problems)
    return vary


def _item_problem(item: str, key: str, sep: str, texts: list[str], vary: dict[str, list[Any]]) -> Problem | None:
    if not sep or not key:
        return Problem((), f"{VARY}'{item}': expected KEY=VALUE1,VALUE2, e.g. network_dim=8,16",
                       zh=f"{VARY}'{item}'：应写成 参数=值1,值2，例如 network_dim=8,16")
    if key not in TrainConfig.model_fields:
        return _unknown_key_problems({key: None})[0].within(VARY)
    if key in SWEEP_OWNED:
        return Problem((key,), f"a sweep cannot vary it: {SWEEP_OWNED[key]}", where=VARY,
                       zh=f"对比队列不能改变这个参数：{SWEEP_OWNED[key]}")
    if key in vary:
        return Problem((key,), "given twice", f"list all its values in one --vary {key}=A,B", where=VARY,
                       zh="写了两次", hint_zh=f"请把它的所有取值写在同一行：{key}=A,B")
    if not all(texts):
        return Problem((key,), f"an empty value in '{item}'", f"separate the values with commas, e.g. {key}=A,B",
                       where=VARY, zh=f"'{item}' 里有空值", hint_zh=f"取值之间用英文逗号分隔，例如 {key}=A,B")
    return None


def _typed(key: str, text: str) -> Any:
    """The value a config file would hold: true/false, null/none, a number, else the text. Not YAML's own rules:
    YAML 1.1 reads 1e-4 as text and no/off as false (mixed_precision=no). Text the key accepts wins over a
    number it does not (training_comment=1 stays '1', resolution=512 becomes '512')."""
    word = text.lower()
    if word in _WORDS:
        return _WORDS[word]
    for convert in (int, float):
        try:
            value = convert(text)
        except ValueError:
            continue
        return text if not _accepts(key, value) and _accepts(key, text) else value
    return text


def _accepts(key: str, value: Any) -> bool:
    try:
        TypeAdapter(TrainConfig.model_fields[key].annotation).validate_python(value)
    except ValidationError:
        return False
    return True


def _text(value: Any) -> str:
    """A value as a label shows it: 0.0005, true, none."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    return str(value)


# --- the runs -------------------------------------------------------------------------------------------------
def variations(base: dict[str, Any], vary: dict[str, list[Any]]) -> Runs:
    """Every combination of the varied values as (label, config): label like "network_dim=16,learning_rate=0.0005",
    config the base with those values, output_name "<output_name>-<short tag>" and the previews fixed.

    Each config is validated; ConfigError lists the problems of all of them (a problem every variation has once,
    the others after their label)."""
    if not vary:
        raise ConfigError([Problem((), "--vary: nothing to vary", "give at least one KEY=VALUE1,VALUE2",
                                   zh="--vary：没有要变化的参数", hint_zh="请至少写一行 参数=值1,值2")])
    combos = list(itertools.product(*vary.values()))
    if len(combos) > MAX_RUNS:
        raise ConfigError([Problem((), f"--vary: {len(combos)} runs planned, at most {MAX_RUNS} in one sweep",
                                   "vary fewer keys or values",
                                   zh=f"--vary：计划了 {len(combos)} 次训练，一个队列最多 {MAX_RUNS} 次",
                                   hint_zh="请减少要变化的参数或取值")])
    shared = _same_previews(base)
    name = str(base.get("output_name") or TrainConfig.model_fields["output_name"].default)
    runs, problems = [], {}
    for combo, tag in zip(combos, _file_tags(list(vary), combos)):
        settings = dict(zip(vary, combo))
        label = ",".join(f"{key}={_text(value)}" for key, value in settings.items())
        config = {**shared, **settings, "output_name": f"{name}-{tag}"}
        try:
            validate_config(config)
        except ConfigError as exc:
            problems[label] = exc.problems
        runs.append((label, config))
    if problems:
        raise ConfigError(_merge_lines(problems, len(runs)))
    return runs


def _same_previews(base: dict[str, Any]) -> dict[str, Any]:
    """The base with its previews fixed for every run: a prompt file read into a list now (an edit during the
    sweep cannot reach only the later runs) and each prompt without --d given the base seed."""
    prompts = base.get("sample_prompts")
    if not isinstance(prompts, (str, list)):  # none, or a wrong type that validation names
        return dict(base)
    if isinstance(prompts, str):
        path = Path(prompts).expanduser()
        if not path.is_file():
            raise ConfigError([Problem(("sample_prompts",), f"file '{prompts}' does not exist",
                                       "give a text file with one prompt a line, or a list of prompts",
                                       zh=f"文件 '{prompts}' 不存在", hint_zh="请给一个每行一条提示词的文本文件，"
                                       "或提示词列表")])
        prompts = read_user_text(path, "sample_prompts").splitlines()  # UTF-8, UTF-16 with a BOM or GBK
    seed = base.get("seed", TrainConfig.model_fields["seed"].default)
    lines = [str(line).strip() for line in prompts if str(line).strip() and not str(line).lstrip().startswith("#")]
    return {**base, "sample_prompts": [line if _HAS_SEED.search(line) else f"{line} --d {seed}" for line in lines]}


def _file_tags(keys: list[str], combos: list[tuple[Any, ...]]) -> list[str]:
    """Short file-name tags like nd16-lr0.0005: each key's initials (the whole key when two share them) and its
    value in characters a file name may hold; numbered when two variations would still get the same tag."""
    short = [("".join(part[:1] for part in key.split("_")) if "_" in key else key) for key in keys]
    if len(set(short)) < len(short):
        short = keys
    tags = ["-".join(f"{s}{_file_text(value)}" for s, value in zip(short, combo)) for combo in combos]
    if len(set(tags)) < len(tags):
        tags = [f"{i + 1}-{tag}" for i, tag in enumerate(tags)]
    return tags


def _file_text(value: Any) -> str:
    text = _text(value)
    if "/" in text or "\\" in text:  # a path: its file or folder name says enough
        text = PurePath(text.replace("\\", "/")).stem
    return re.sub(r"[^A-Za-z0-9.+_-]+", "_", text).strip("._")[:32] or "x"


def _merge_lines(per_label: dict[str, list[Item]], runs: int) -> list[Item]:
    """Problems or warnings every one of the runs has are shown once; the rest after their run's label."""
    common = set.intersection(*map(set, per_label.values())) if len(per_label) == runs else set()
    shared = [line for line in next(iter(per_label.values()), []) if line in common]
    return shared + [_labelled(label, line) for label, lines in per_label.items() for line in lines
                     if line not in common]


def _labelled(label: str, line: Item) -> Item:
    return line.within(f"[{label}] ") if isinstance(line, Problem) else f"[{label}] {line}"


# --- the plan -------------------------------------------------------------------------------------------------
@dataclass
class SweepPlan:
    """Checked variations, ready to run: runs are (label, config) as `variations` makes them."""

    vary: dict[str, list[Any]]
    runs: Runs
    total_steps: list[int]
    warnings: list[str]
    config_file: Path | None = None

    @property
    def output_dir(self) -> Path:
        return Path(validate_config(self.runs[0][1]).output_dir).expanduser().resolve()

    @property
    def prompts(self) -> list[str]:
        return list(self.runs[0][1].get("sample_prompts") or [])

    def describe(self) -> str:
        varying = "; ".join(f"{key} ({', '.join(map(_text, values))})" for key, values in self.vary.items())
        lines = [f"sweep of {len(self.runs)} runs varying {varying}:"]
        width = max(len(label) for label, _ in self.runs)
        lines += [f"  {i}. {label:<{width}}  {steps} steps -> {config['output_name']}"
                  for i, ((label, config), steps) in enumerate(zip(self.runs, self.total_steps), 1)]
        return "\n".join(lines + [f"warning: {warning}" for warning in self.warnings])


def plan_sweep(config: Path | dict[str, Any], vary: dict[str, list[Any]],
               gpu: tuple[bool, bool] | None = None) -> SweepPlan:
    """Validate every variation and run `check`'s preflight on each (dataset, files, existing outputs), so every
    problem is known before the first run starts; ConfigError lists them all. gpu: as run_preflight takes it
    (None asks a child process, so this process never holds GPU memory the runs need)."""
    base = read_config_file(config) if isinstance(config, Path) else dict(config)
    runs = variations(base, vary)  # the cheap checks first: a bad value is refused before torch loads
    steps, warnings = _preflight_all(runs, gpu)
    return SweepPlan(vary, runs, steps, _preview_warnings(runs[0][1]) + warnings,
                     config.resolve() if isinstance(config, Path) else None)


def _preflight_all(runs: Runs, gpu: tuple[bool, bool] | None) -> tuple[list[int], list[str]]:
    """Each run's total steps and the warnings of all; ConfigError with the problems of all."""
    from trainer.checks.preflight import run_preflight
    from trainer.run.gpu import gpu_facts

    facts = gpu or gpu_facts()
    steps, warnings, problems = [], {}, {}
    for label, settings in runs:
        try:
            pre = run_preflight(validate_config(settings), gpu=facts)
        except ConfigError as exc:
            problems[label] = exc.problems
            continue
        steps.append(pre.plan.total_steps)
        warnings[label] = pre.warnings
    if problems:
        raise ConfigError(_merge_lines(problems, len(runs)))
    return steps, _merge_lines(warnings, len(runs))


def _preview_warnings(config: dict[str, Any]) -> list[str]:
    """Without previews the compare grid stays empty: worth saying before hours of training."""
    schedule = ("sample_every_n_epochs", "sample_every_n_steps", "sample_at_first")
    if not config.get("sample_prompts"):
        return ["sample_prompts is empty: the runs make no previews to compare, only loss curves"]
    if not any(config.get(key) for key in schedule):
        return [f"{', '.join(schedule)}: all empty, so the runs make no previews to compare; set "
                + "sample_every_n_epochs: 1 in the base config"]
    return []
