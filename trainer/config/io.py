"""Reading and writing configs (YAML, JSON, TOML): files carry a version and older ones migrate
(trainer/config/migrations.py); validation errors become Problems naming their keys."""

from __future__ import annotations

import difflib
import json
import reprlib
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from trainer.common.errors import ConfigError, Problem, RuleError, UserError
from trainer.common.text import read_user_text
from trainer.config import TrainConfig
from trainer.config.migrations import migrate, split_version, versioned
from trainer.config.pydantic_zh import zh_message

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# sd-scripts options that have no meaning in Danlu, with the reason a user reads instead of "unknown key".
NOT_NEEDED = {
    "mem_eff_attn": "use sdpa: true (PyTorch's memory-efficient attention) instead",
    "logging_dir": "TensorBoard logs go to the run folder (output_dir/runs/<time>/tb)",
    "log_with": "TensorBoard logs go to the run folder (output_dir/runs/<time>/tb)",
}
NOT_NEEDED_ZH = {
    "mem_eff_attn": "请改用 sdpa: true（PyTorch 自带的省显存注意力）",
    "logging_dir": "TensorBoard 日志写在运行文件夹里（output_dir/runs/<时间>/tb）",
    "log_with": "TensorBoard 日志写在运行文件夹里（output_dir/runs/<时间>/tb）",
}
MAX_YAML_NODES = 100_000  # values in a YAML file with its aliases expanded: a config has hundreds
_VALUE = reprlib.Repr()  # a bad value as a message quotes it: long strings and lists shortened
_VALUE.maxstring, _VALUE.maxother, _VALUE.maxlist, _VALUE.maxdict, _VALUE.maxlevel = 120, 120, 8, 8, 3


class _BoundedLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a document whose aliases expand beyond MAX_YAML_NODES values (a few hundred
    bytes of nested aliases can stand for gigabytes) or refer to themselves."""

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
            _expanded_size(node, {})
        return node


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values node stands for once every alias in it is expanded; sizes: per node seen (-1: counting)."""
    known = sizes.get(id(node))
    if known == -1:
        raise yaml.YAMLError("an alias refers to a value that contains it")
    if known is not None:
        return known
    sizes[id(node)] = -1
    children = node.value if isinstance(node, yaml.SequenceNode) else \
        [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode) else []
    size = 1 + sum(_expanded_size(child, sizes) for child in children)
    if size > MAX_YAML_NODES:
        raise yaml.YAMLError(f"its aliases (*name) expand to more than {MAX_YAML_NODES} values")
    sizes[id(node)] = size
    return size


def read_config_file(path: Path) -> dict[str, Any]:
    """A config file's flat mapping with the keys of the current version (older versions migrate)."""
    version, data = split_version(parse_config_file(path))
    return migrate(data, version)


def parse_config_file(path: Path) -> dict[str, Any]:
    """Parse a YAML, JSON or TOML file into a mapping as written (TOML sections are flattened as sd-scripts
    does), version key included."""
    if not path.exists():
        raise ConfigError([Problem((), f"{path}: config file not found", zh=f"{path}：找不到配置文件")])
    try:
        text = read_user_text(path)
    except UserError as exc:
        raise ConfigError(exc.problems) from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = _flatten_sections(tomllib.loads(text))
        elif suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.load(text, Loader=_BoundedLoader)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = suffix.lstrip(".").upper() or "YAML"
        raise ConfigError([Problem((), f"{path}: not valid {kind}: {exc}",
                                   zh=f"{path}：不是有效的 {kind} 文件：{exc}")]) from None
    except RecursionError:
        raise ConfigError([Problem((), f"{path}: values nested too deeply to read",
                                   zh=f"{path}：数值嵌套太深，无法读取")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([Problem((), f"{path}: expected a mapping of keys to values at the top level",
                                   zh=f"{path}：最外层应是“参数: 值”的映射")])
    return data


def _flatten_sections(data: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten_sections(value))
        else:
            flat[key] = value
    return flat


def validate_config(data: dict[str, Any]) -> TrainConfig:
    """Build a TrainConfig, or raise ConfigError listing every problem."""
    problems = _unknown_key_problems(data)
    known = {k: v for k, v in data.items() if k in TrainConfig.model_fields}
    try:
        config = TrainConfig(**known)
    except ValidationError as exc:
        problems += _first_per_key(_problem(error, known) for error in exc.errors())
        config = None
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: Path) -> TrainConfig:
    return validate_config(read_config_file(path))


def _unknown_key_problems(data: dict[str, Any]) -> list[Problem]:
    problems = []
    names = list(TrainConfig.model_fields)
    for key in data:
        if key in TrainConfig.model_fields:
            continue
        if key in NOT_NEEDED:
            problems.append(Problem((key,), f"not needed ({NOT_NEEDED[key]})", "remove this key",
                                    zh=f"丹炉用不到（{NOT_NEEDED_ZH[key]}）", hint_zh="删掉这一项"))
            continue
        close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else "see docs/parameters.md for the keys"
        hint_zh = f"是不是想写 '{close[0]}'？" if close else "参数名见 docs/parameters.md"
        problems.append(Problem((str(key),), "unknown key", hint, zh="未知参数", hint_zh=hint_zh))
    return problems


def _first_per_key(problems: Iterable[Problem]) -> Iterator[Problem]:
    """A union type reports one error per member; the user needs only the first. Rules between keys all stay."""
    seen: set[tuple[str, ...]] = set()
    for problem in problems:
        if problem.named or problem.keys not in seen:
            seen.add(problem.keys)
            yield problem


def _problem(error: dict[str, Any], data: dict[str, Any]) -> Problem:
    """A pydantic error as a Problem: a field's names its key, the bad value and what is allowed; a rule of the
    whole config names its keys when it raised a RuleError."""
    message = error["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    if error["type"] == "literal_error":
        message = f"not one of the allowed values: {error['ctx']['expected']}"
    zh = zh_message(error)
    if not error["loc"]:
        cause = error.get("ctx", {}).get("error")
        return Problem(cause.keys if isinstance(cause, RuleError) else (), message, named=True, zh=zh)
    key = str(error["loc"][0])
    value = _VALUE.repr(data.get(key, error.get("input")))
    return Problem((key,), f"{value} is not valid: {message}", zh=f"{value} 无效：{zh}")


def config_to_yaml(config: TrainConfig | Mapping[str, Any]) -> str:
    """A config file's text, its version first: a TrainConfig in full (every key, defaults included) in schema
    order, or a mapping (the GUI's form as it is) as given."""
    settings = config.model_dump(mode="json") if isinstance(config, TrainConfig) else dict(config)
    return yaml.safe_dump(versioned(settings), sort_keys=False, allow_unicode=True)
