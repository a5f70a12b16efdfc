"""Reading and writing configs (YAML, JSON, TOML) and turning validation errors into one line per problem."""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from trainer.common.errors import ConfigError
from trainer.config import TrainConfig

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
    """Parse a YAML, JSON or TOML file into a flat mapping (TOML sections are flattened as sd-scripts does)."""
    if not path.is_file():
        raise ConfigError([f"{path}: config file not found"])
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
        raise ConfigError([f"{path}: not valid {suffix.lstrip('.').upper() or 'YAML'}: {exc}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping of keys to values at the top level"])
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
    """Build a TrainConfig, or raise ConfigError listing every problem, one line each."""
    problems = _unknown_key_problems(data)
    known = {k: v for k, v in data.items() if k in TrainConfig.model_fields}
    try:
        config = TrainConfig(**known)
    except ValidationError as exc:
        lines = [_describe(error, known) for error in exc.errors()]
        problems += list(_first_per_key(lines))
        config = None
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: Path) -> TrainConfig:
    return validate_config(read_config_file(path))


def _unknown_key_problems(data: dict[str, Any]) -> list[str]:
    problems = []
    names = list(TrainConfig.model_fields)
    for key in data:
        if key in TrainConfig.model_fields:
            continue
        if key in NOT_NEEDED:
            problems.append(f"{key}: not needed ({NOT_NEEDED[key]}); remove this key")
            continue
        close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else "; see docs/parameters.md for the keys"
        problems.append(f"{key}: unknown key{hint}")
    return problems


def _first_per_key(lines: list[str]) -> Iterator[str]:
    """A union type reports one error per member; the user needs only the first."""
    seen: set[str] = set()
    for line in lines:
        key = line.split(":", 1)[0]
        if key not in seen or " " in key:
            seen.add(key)
            yield line


def _describe(error: dict[str, Any], data: dict[str, Any]) -> str:
    """One line: the key, the bad value, what is allowed."""
    key = str(error["loc"][0]) if error["loc"] else "config"
    message = error["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    if error["type"] == "literal_error":
        allowed = error["ctx"]["expected"]
        message = f"not one of the allowed values: {allowed}"
    if key == "config":  # a cross-field check names its own keys
        return message
    value = data.get(key, error.get("input"))
    return f"{key}: {value!r} is not valid: {message}"


def config_to_yaml(config: TrainConfig) -> str:
    """The full config (every key, defaults included) as YAML, in schema order."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
