"""Importing other tools' configs: kohya_ss GUI JSON, sd-scripts config and dataset TOML, lora-scripts TOML.

Every field of the foreign file ends up in one of two places: mapped (it became Danlu settings, or it needs none
because Danlu already behaves that way) or `unmapped`, with a one-line reason. Nothing is dropped silently.
The settings are validated together; a value Danlu refuses becomes unmapped with the validation message.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trainer.adapters.types import ARG_RENAMES
from trainer.common.errors import ConfigError
from trainer.config import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

FORMATS = ("kohya_ss", "sd_scripts", "sd_scripts_dataset", "lora_scripts")
# Fields only kohya_ss's GUI JSON has (sd-scripts has none of them).
KOHYA_SS_MARKERS = ("LoRA_type", "max_resolution", "epoch", "lr_warmup", "optimizer", "model_list")
# Keys and sections only lora-scripts (SD-Trainer) writes: its form's own fields, and config/*.toml's [others].
LORA_SCRIPTS_MARKERS = ("model_train_type", "lycoris_algo", "lokr_factor", "dylora_unit", "lr_restart_cycles",
                        "enable_preview", "positive_prompts", "network_args_custom", "optimizer_args_custom",
                        "ui_custom_params", "prodigy_d0", "prodigy_d_coef", "enable_base_weight", "others")


@dataclass
class Unmapped:
    key: str  # the foreign field name (dotted for nested, e.g. "datasets.0.subsets.1.color_aug")
    value: Any
    reason: str  # one line: why it is not taken


@dataclass
class ImportResult:
    format: str  # one of FORMATS
    settings: dict[str, Any]  # Danlu config keys -> values; TrainConfig accepts them together
    unmapped: list[Unmapped]
    metadata: dict[str, Any]  # lora-scripts preset [metadata] (name, version, author, train_type, ...) etc.
    mapped: list[str] = field(default_factory=list)  # the foreign fields taken (with `unmapped`: all of them)


def is_off(value: Any) -> bool:
    """An option that is switched off or left empty: where Danlu lacks the feature, it behaves the same."""
    return value is None or value is False or value in ("", [], {}) or (
        isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0)


def number(value: Any) -> float | None:
    """A number from a JSON/TOML value or a form's numeric string ("1e-4", "0"); None when blank or not a number."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def coerce(key: str, value: Any) -> Any:
    """A form's value as the Danlu key takes it: a numeric string as a number ("75" -> 75) where the key takes no
    text, and a whole float (1.0) as an int where the key takes whole numbers only."""
    annotation = str(TrainConfig.model_fields[key].annotation)
    whole_only = "float" not in annotation and "str" not in annotation  # int, or a Literal like max_token_length
    if isinstance(value, str) and "str" not in annotation and number(value) is not None:
        value = float(value)
    if isinstance(value, float) and value.is_integer() and whole_only:
        return int(value)
    return value


class Collector:
    """What an importer learned: the settings (each with the foreign fields it came from), and the foreign fields
    taken or not taken."""

    def __init__(self, raw: dict[str, Any]):
        self.raw = raw  # foreign field (dotted) -> value, for the reasons shown to the user
        self.settings: dict[str, Any] = {}
        self.origins: dict[str, list[str]] = {}
        self.mapped: list[str] = []
        self.unmapped: list[Unmapped] = []
        self.metadata: dict[str, Any] = {}

    def set(self, key: str, value: Any, *sources: str) -> None:
        """Danlu's `key` = value, taken from the foreign fields `sources`."""
        self.settings[key] = value
        self.origins[key] = list(sources)
        for source in sources:
            self.keep(source)

    def keep(self, source: str) -> None:
        """The foreign field is understood and needs no setting (Danlu does the same by default, or another field
        it goes with carries it)."""
        if source not in self.mapped and not any(item.key == source for item in self.unmapped):
            self.mapped.append(source)

    def skip(self, source: str, value: Any, reason: str) -> None:
        if source in self.mapped:
            self.mapped.remove(source)
        self.unmapped.append(Unmapped(source, value, reason))

    def result(self, fmt: str, path: Path) -> ImportResult:
        self._xformers_to_sdpa()
        self._drop_refused(path)
        ordered = {key: self.settings[key] for key in TrainConfig.model_fields if key in self.settings}
        return ImportResult(fmt, ordered, self.unmapped, self.metadata, self.mapped)

    def _xformers_to_sdpa(self) -> None:
        """xformers is not part of Danlu's install: a config that used it trains with sdpa, so it works on the
        first try; the field is listed with the reason."""
        if not self.settings.get("xformers") or importlib.util.find_spec("xformers") is not None:
            return
        self.settings.pop("xformers")
        for source in self.origins.pop("xformers", []):
            self.skip(source, self.raw.get(source), "xformers is not installed here: Danlu uses PyTorch's sdpa "
                      "attention instead (as fast, no extra package); set xformers: true after installing it")
        self.settings["sdpa"] = True

    def _drop_refused(self, path: Path) -> None:
        """Validate the settings together; move each refused one to unmapped (under the foreign fields it came
        from) until the rest is accepted."""
        for _ in range(len(self.settings) + len(self.settings.get("network_args") or []) + 1):
            refused = refused_settings(self.settings)
            if "" in refused:
                raise ConfigError([f"{path}: the imported settings are refused: {refused['']}"])
            if not refused:
                return
            for key, reason in sorted(refused.items(), key=lambda item: _entry_index(item[0]), reverse=True):
                if _entry_index(key) >= 0:  # network_args[2] goes before [1], whose place it would shift
                    self._drop_network_arg(_entry_index(key), reason)
                    continue
                self.settings.pop(key)
                for source in dict.fromkeys(self.origins.pop(key, [])):
                    self.skip(source, self.raw.get(source), f"Danlu refuses it: {reason}")
        raise ConfigError([f"{path}: the imported settings do not validate together"])  # pragma: no cover

    def _drop_network_arg(self, index: int, reason: str) -> None:
        """One refused network_args entry goes; the others (the algo above all) stay."""
        entries, sources = self.settings["network_args"], self.origins["network_args"]
        entry, source = entries.pop(index), sources.pop(index)
        label = f"{source}.{entry.partition('=')[0]}" if source.endswith("network_args") else source
        self.skip(label, entry, f"Danlu refuses it: {reason}")
        if not entries:
            self.settings.pop("network_args")


def refused_settings(settings: dict[str, Any]) -> dict[str, str]:
    """What TrainConfig refuses: Danlu key (or "network_args[i]" for one entry) -> why. Every field error, else
    the key a cross-field rule names first. Empty when accepted; the key "" when nothing can be blamed."""
    try:
        TrainConfig(**settings)
        return {}
    except ValidationError as exc:
        errors = exc.errors()
    refused: dict[str, str] = {}
    for error in errors:
        name = str(error["loc"][0]) if error["loc"] else ""
        key = _blame(settings, name)
        if key:
            message = error["msg"].replace("Input should be", "must be")
            refused.setdefault(key, message if key == name else f"{name}: {message}")
    if refused:
        return refused
    message = errors[0]["msg"].removeprefix("Value error, ")
    names = {*settings, *(ARG_RENAMES.get(arg, arg) for arg in _arg_names(settings))}
    named = [(match.start(), name) for name in names
             if (match := re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", message))]
    return {(_blame(settings, min(named)[1]) if named else ""): message}


def _entry_index(key: str) -> int:
    """i of "network_args[i]"; -1 for a Danlu key."""
    return int(key[len("network_args["):-1]) if key.startswith("network_args[") else -1


def _arg_names(settings: dict[str, Any]) -> list[str]:
    return [str(entry).partition("=")[0].strip() for entry in settings.get("network_args") or []]


def _blame(settings: dict[str, Any], name: str) -> str:
    """The setting behind a key TrainConfig names: the key itself, or the network_args entry it was read from."""
    if name in settings:
        return name
    for index, arg in enumerate(_arg_names(settings)):
        if name in (arg, ARG_RENAMES.get(arg)):
            return f"network_args[{index}]"
    return ""


def read_foreign(path: Path) -> dict[str, Any]:
    """The file parsed as it is (TOML sections kept); ConfigError naming the file when it cannot be read."""
    if not path.is_file():
        raise ConfigError([f"{path}: file not found"])
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        kinds = "a kohya_ss .json or sd-scripts/lora-scripts .toml file"
        raise ConfigError([f"{path}: not {kinds} (a Danlu YAML config needs no import)"])
    try:
        text = path.read_text(encoding="utf-8-sig")
        data = json.loads(text) if suffix == ".json" else tomllib.loads(text)
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not a text file (expected UTF-8 {suffix.lstrip('.').upper()})"]) from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"{path}: not valid {suffix.lstrip('.').upper()}: {exc}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping of fields to values at the top level"])
    return data


def detect_format(path: Path, data: dict) -> str:
    """Which tool wrote the file, from its suffix and fields; ConfigError when it is none of FORMATS."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        if any(key in data for key in KOHYA_SS_MARKERS):
            return "kohya_ss"
        raise ConfigError([f"{path}: not a kohya_ss GUI config (it has none of {', '.join(KOHYA_SS_MARKERS)})"])
    if suffix != ".toml":
        raise ConfigError([f"{path}: not a kohya_ss .json or sd-scripts/lora-scripts .toml file"])
    if isinstance(data.get("datasets"), list) or isinstance(data.get("general"), dict):
        return "sd_scripts_dataset"
    if isinstance(data.get("metadata"), dict) and isinstance(data.get("data"), dict):
        return "lora_scripts"
    names = set(data) | {key for value in data.values() if isinstance(value, dict) for key in value}
    return "lora_scripts" if names & set(LORA_SCRIPTS_MARKERS) else "sd_scripts"


def import_file(path: Path) -> ImportResult:
    """Read a foreign config and map it to Danlu settings; ConfigError names the file when it cannot be read."""
    from trainer.presets.import_kohya_ss import import_kohya_ss
    from trainer.presets.import_lora_scripts import import_lora_scripts
    from trainer.presets.import_sd_scripts import import_sd_scripts, import_sd_scripts_dataset

    importers = {"kohya_ss": import_kohya_ss, "sd_scripts": import_sd_scripts,
                 "sd_scripts_dataset": import_sd_scripts_dataset, "lora_scripts": import_lora_scripts}
    data = read_foreign(path)
    fmt = detect_format(path, data)
    return importers[fmt](data).result(fmt, path)
