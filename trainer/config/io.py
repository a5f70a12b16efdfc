"""Reading and writing configs (YAML, JSON, TOML): files carry a version and older ones migrate
(trainer/config/migrations.py); validation errors become Problems naming their keys."""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from trainer.common.errors import ConfigError, Problem, RuleError
from trainer.config import TrainConfig
from trainer.config.migrations import migrate, split_version, versioned

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


def read_config_file(path: Path) -> dict[str, Any]:
    """A config file's flat mapping with the keys of the current version (older versions migrate)."""
    version, data = split_version(parse_config_file(path))
    return migrate(data, version)


def parse_config_file(path: Path) -> dict[str, Any]:
    """Parse a YAML, JSON or TOML file into a mapping as written (TOML sections are flattened as sd-scripts
    does), version key included."""
    if not path.is_file():
        raise ConfigError([Problem((), f"{path}: config file not found")])
    text = path.read_text(encoding="utf-8-sig")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = _flatten_sections(tomllib.loads(text))
        elif suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = suffix.lstrip(".").upper() or "YAML"
        raise ConfigError([Problem((), f"{path}: not valid {kind}: {exc}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([Problem((), f"{path}: expected a mapping of keys to values at the top level")])
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
            problems.append(Problem((key,), f"not needed ({NOT_NEEDED[key]})", "remove this key"))
            continue
        close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else "see docs/parameters.md for the keys"
        problems.append(Problem((str(key),), "unknown key", hint))
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
    if not error["loc"]:
        cause = error.get("ctx", {}).get("error")
        return Problem(cause.keys if isinstance(cause, RuleError) else (), message, named=True)
    key = str(error["loc"][0])
    value = data.get(key, error.get("input"))
    return Problem((key,), f"{value!r} is not valid: {message}")


def config_to_yaml(config: TrainConfig | Mapping[str, Any]) -> str:
    """A config file's text, its version first: a TrainConfig in full (every key, defaults included) in schema
    order, or a mapping (the GUI's form as it is) as given."""
    settings = config.model_dump(mode="json") if isinstance(config, TrainConfig) else dict(config)
    return yaml.safe_dump(versioned(settings), sort_keys=False, allow_unicode=True)
