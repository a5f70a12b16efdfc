"""Importing other tools' configs: kohya_ss GUI JSON, sd-scripts config and dataset TOML, lora-scripts TOML.

Every field of the foreign file ends up in one of two places: mapped (it became Danlu settings, or it needs none
because Danlu already behaves that way) or `unmapped`, with a one-line reason. Nothing is dropped silently.
The settings are validated together; a value Danlu refuses becomes unmapped with the validation message.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from trainer.common.errors import ConfigError, Problem, UserError
from trainer.common.text import read_user_text
from trainer.presets.collector import ImportResult
from trainer.presets.import_kohya_ss import import_kohya_ss
from trainer.presets.import_lora_scripts import import_lora_scripts
from trainer.presets.import_sd_scripts import import_sd_scripts, import_sd_scripts_dataset

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

IMPORTERS = {"kohya_ss": import_kohya_ss, "sd_scripts": import_sd_scripts,
             "sd_scripts_dataset": import_sd_scripts_dataset, "lora_scripts": import_lora_scripts}
# Fields only kohya_ss's GUI JSON has (sd-scripts has none of them).
KOHYA_SS_MARKERS = ("LoRA_type", "max_resolution", "epoch", "lr_warmup", "optimizer", "model_list")
# Keys and sections only lora-scripts (SD-Trainer) writes: its form's own fields, and config/*.toml's [others].
LORA_SCRIPTS_MARKERS = ("model_train_type", "lycoris_algo", "lokr_factor", "dylora_unit", "lr_restart_cycles",
                        "enable_preview", "positive_prompts", "network_args_custom", "optimizer_args_custom",
                        "ui_custom_params", "prodigy_d0", "prodigy_d_coef", "enable_base_weight", "others")


def read_foreign(path: Path) -> dict[str, Any]:
    """The file parsed as it is (TOML sections kept); ConfigError naming the file when it cannot be read."""
    if not path.is_file():
        raise ConfigError([Problem((), f"{path}: file not found", zh=f"{path}：找不到文件")])
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        kinds = "a kohya_ss .json or sd-scripts/lora-scripts .toml file"
        raise ConfigError([Problem((), f"{path}: not {kinds} (a Danlu YAML config needs no import)",
                                   zh=f"{path}：不是 kohya_ss 的 .json 或 sd-scripts/秋叶训练器的 .toml 文件"
                                   "（丹炉自己的 YAML 配置不用导入）")])
    try:
        text = read_user_text(path)  # UTF-8, UTF-16 with a BOM or GBK (trainer/common/text.py)
        data = json.loads(text) if suffix == ".json" else tomllib.loads(text)
    except UserError as exc:
        raise ConfigError(exc.problems) from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([Problem((), f"{path}: not valid {suffix.lstrip('.').upper()}: {exc}",
                                   zh=f"{path}：不是有效的 {suffix.lstrip('.').upper()} 文件：{exc}")]) from None
    if not isinstance(data, dict):
        raise ConfigError([Problem((), f"{path}: expected a mapping of fields to values at the top level",
                                   zh=f"{path}：最外层应是“字段: 值”的映射")])
    return data


def detect_format(path: Path, data: dict) -> str:
    """Which tool wrote the file, from its suffix and fields; ConfigError when it is none of IMPORTERS."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        if any(key in data for key in KOHYA_SS_MARKERS):
            return "kohya_ss"
        markers = ", ".join(KOHYA_SS_MARKERS)
        raise ConfigError([Problem((), f"{path}: not a kohya_ss GUI config (it has none of {markers})",
                                   zh=f"{path}：不是 kohya_ss 图形界面的配置（{markers} 一个都没有）")])
    if suffix != ".toml":
        raise ConfigError([Problem((), f"{path}: not a kohya_ss .json or sd-scripts/lora-scripts .toml file",
                                   zh=f"{path}：不是 kohya_ss 的 .json 或 sd-scripts/秋叶训练器的 .toml 文件")])
    if isinstance(data.get("datasets"), list) or isinstance(data.get("general"), dict):
        return "sd_scripts_dataset"
    if isinstance(data.get("metadata"), dict) and isinstance(data.get("data"), dict):
        return "lora_scripts"
    names = set(data) | {key for value in data.values() if isinstance(value, dict) for key in value}
    return "lora_scripts" if names & set(LORA_SCRIPTS_MARKERS) else "sd_scripts"


def import_file(path: Path) -> ImportResult:
    """Read a foreign config and map it to Danlu settings; ConfigError names the file when it cannot be read."""
    data = read_foreign(path)
    fmt = detect_format(path, data)
    return IMPORTERS[fmt](data).result(fmt, path)
