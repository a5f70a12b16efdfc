"""What an importer collects from a foreign config: the Danlu settings with the foreign fields they came from, and
every foreign field not taken with its reason. The import_* modules fill a Collector; importers.py dispatches.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.adapters.sd_scripts import ARG_RENAMES
from trainer.common.errors import ConfigError, Problem
from trainer.config import TrainConfig
from trainer.config.io import validate_config

# The report's lines by kind; fields: key and value (the file's), setting and new (what Danlu trains with), reason.
REPORT_TEXT = {"changed": "changed: {key} = {value!r} -> {setting} = {new!r}: {reason}",
               "default": "sd-scripts' default (the file leaves it out): {setting} = {new!r}",
               "unmapped": "not imported: {key} = {value!r}: {reason}"}
COMPANIONS = {"network_dim": "network_alpha", "network_alpha": "network_dim", "conv_dim": "conv_alpha",
              "conv_alpha": "conv_dim"}  # a rank and the alpha that scales it: imported or refused together


@dataclass
class Unmapped:
    key: str  # the foreign field name (dotted for nested, e.g. "datasets.0.subsets.1.color_aug")
    value: Any
    reason: str  # one line: why it is not taken
    reason_zh: str = ""  # the same in Chinese (the GUI's zh page)

    def reason_in(self, lang: str) -> str:
        return self.reason_zh if lang == "zh" and self.reason_zh else self.reason


@dataclass
class Changed:
    key: str  # the foreign field
    value: Any  # its value in the file
    setting: str  # the Danlu key it became
    new: Any  # the value Danlu trains with
    reason: str  # one line: why the value differs
    reason_zh: str = ""

    def reason_in(self, lang: str) -> str:
        return self.reason_zh if lang == "zh" and self.reason_zh else self.reason


@dataclass
class ImportResult:
    format: str  # a key of importers.IMPORTERS
    settings: dict[str, Any]  # Danlu config keys -> values; TrainConfig accepts them together
    unmapped: list[Unmapped]
    metadata: dict[str, Any]  # lora-scripts preset [metadata] (name, version, author, train_type, ...) etc.
    mapped: list[str] = field(default_factory=list)  # the foreign fields taken (with `unmapped`: all of them)
    changed: list[Changed] = field(default_factory=list)  # the foreign fields taken with another value

    def named_settings(self) -> dict[str, Any]:
        """Every Danlu key the file speaks for: the settings, and with Danlu's default the keys of foreign fields
        taken as that default (a field of the same name understood as Danlu's default, a value left out so the
        default applies). Applied to a form, these change and nothing else (format.import_settings)."""
        defaults = {name: info.default for name, info in TrainConfig.model_fields.items()}
        kept = [key for key in self.mapped if key in defaults] + [item.setting for item in self.changed
                                                                  if item.setting not in self.settings]
        return {**{key: defaults[key] for key in kept}, **self.settings}

    def report(self, text: Mapping[str, str] = REPORT_TEXT, lang: str = "en") -> list[str]:
        """Every source value the import changed, filled in, dropped or could not map: one line each, in `text`'s
        wording and the reasons in lang (REPORT_TEXT for the CLI's `preset import`; the GUI's preset tab passes
        its language's)."""
        lines = [text["changed"].format(key=c.key, value=c.value, setting=c.setting, new=c.new,
                                        reason=c.reason_in(lang)) for c in self.changed]
        lines += [text["default"].format(setting=key, new=value)
                  for key, value in (self.metadata.get("sd_scripts_defaults") or {}).items()]
        return lines + [text["unmapped"].format(key=item.key, value=item.value, reason=item.reason_in(lang))
                        for item in self.unmapped]


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
        self.notes: dict[str, tuple[str, str]] = {}  # foreign field -> why its value was changed (en, zh)
        self.refused: dict[str, str] = {}  # foreign field -> the Danlu key a refused value was for
        self.defaulted: list[Changed] = []  # foreign values left out, so that Danlu's default (another value) applies

    def set(self, key: str, value: Any, *sources: str, why: str = "", why_zh: str = "") -> None:
        """Danlu's `key` = value, taken from the foreign fields `sources`; `why`: the value differs from theirs
        (why_zh: the same in Chinese)."""
        self.settings[key] = value
        self.origins[key] = list(sources)
        for source in sources:
            self.keep(source)
            if why:
                self.notes[source] = (why, why_zh)

    def changed_to_default(self, source: str, key: str, default: Any, why: str, why_zh: str) -> None:
        """The foreign field is left out, and Danlu's default, another value than the file's, applies."""
        self.keep(source)
        self.defaulted.append(Changed(source, self.raw.get(source), key, default, why, why_zh))

    def keep(self, source: str) -> None:
        """The foreign field is understood and needs no setting (Danlu does the same by default, or another field
        it goes with carries it)."""
        if source not in self.mapped and not any(item.key == source for item in self.unmapped):
            self.mapped.append(source)

    def skip(self, source: str, value: Any, reason: str, zh: str) -> None:
        """The foreign field is not taken, for reason (zh: the same in Chinese)."""
        if source in self.mapped:
            self.mapped.remove(source)
        self.unmapped.append(Unmapped(source, value, reason, zh))

    def result(self, fmt: str, path: Path) -> ImportResult:
        self._xformers_to_sdpa()
        self._drop_refused(path)
        self._say_what_is_used()
        ordered = {key: self.settings[key] for key in TrainConfig.model_fields if key in self.settings}
        changed = [item for item in map(self._changed, ordered) if item]
        changed += [item for item in self.defaulted if item.setting not in ordered]
        return ImportResult(fmt, ordered, self.unmapped, self.metadata, self.mapped, changed)

    def _changed(self, key: str) -> Changed | None:
        """The setting's change, under the first foreign field with a note: one line, also where several fields
        went into the value (lora-scripts' preview form into one prompt line)."""
        source = next((source for source in self.origins.get(key, []) if source in self.notes), None)
        return None if source is None else Changed(source, self.raw.get(source), key, self.settings[key],
                                                   *self.notes[source])

    def _say_what_is_used(self) -> None:
        """Each refused value's line ends with the value Danlu trains with instead."""
        config = validate_config(self.settings)
        for item in self.unmapped:
            key = self.refused.get(item.key)
            if key in TrainConfig.model_fields:
                item.reason += f"; Danlu uses {key} = {getattr(config, key)!r} instead"
                item.reason_zh += f"；丹炉改用 {key} = {getattr(config, key)!r}"

    def _xformers_to_sdpa(self) -> None:
        """xformers is not part of Danlu's install: a config that used it trains with sdpa, so it works on the
        first try; the field is listed with the reason."""
        if not self.settings.get("xformers") or importlib.util.find_spec("xformers") is not None:
            return
        self.settings.pop("xformers")
        for source in self.origins.pop("xformers", []):
            self.skip(source, self.raw.get(source), "xformers is not installed here: Danlu uses PyTorch's sdpa "
                      "attention instead (as fast, no extra package); set xformers: true after installing it",
                      "这里没有安装 xformers：丹炉改用 PyTorch 自带的 sdpa 注意力（一样快，不用额外安装）；"
                      "装好 xformers 后可以设 xformers: true")
        self.settings["sdpa"] = True

    def _drop_refused(self, path: Path) -> None:
        """Validate the settings together; move each refused one to unmapped (under the foreign fields it came
        from) until the rest is accepted."""
        for _ in range(len(self.settings) + len(self.settings.get("network_args") or []) + 1):
            refused = refused_settings(self.settings)
            if "" in refused:
                raise ConfigError([Problem((), f"{path}: the imported settings are refused: {refused[''][0]}",
                                           zh=f"{path}：导入的设置不被接受：{refused[''][1]}")])
            if not refused:
                return
            self._with_companions(refused)
            for key, (reason, zh) in sorted(refused.items(), key=lambda item: _entry_index(item[0]), reverse=True):
                if _entry_index(key) >= 0:  # network_args[2] goes before [1], whose place it would shift
                    self._drop_network_arg(_entry_index(key), reason, zh)
                    continue
                self.settings.pop(key)
                for source in dict.fromkeys(self.origins.pop(key, [])):
                    self.skip(source, self.raw.get(source), f"Danlu refuses it: {reason}", f"丹炉不接受：{zh}")
                    self.refused[source] = key
        raise ConfigError([Problem((), f"{path}: the imported settings do not validate together",  # pragma: no cover
                                   zh=f"{path}：导入的设置组合在一起无法通过检查")])

    def _with_companions(self, refused: dict[str, tuple[str, str]]) -> None:
        """A refused rank takes its alpha with it and the other way round: one without the other trains at a scale
        nobody chose."""
        for setting in list(refused):
            key = _danlu_key(self.settings, setting)
            companion = _setting(self.settings, COMPANIONS.get(key, ""))
            if companion and companion not in refused:
                refused[companion] = (f"it goes with {key}, which is refused ({refused[setting][0]})",
                                      f"它和 {key} 是一对，而 {key} 不被接受（{refused[setting][1]}）")

    def _drop_network_arg(self, index: int, reason: str, zh: str) -> None:
        """One refused network_args entry goes; the others (the algo above all) stay."""
        entries, sources = self.settings["network_args"], self.origins["network_args"]
        entry, source = entries.pop(index), sources.pop(index)
        name = entry.partition("=")[0].strip()
        label = f"{source}.{name}" if source.endswith("network_args") else source
        self.skip(label, entry, f"Danlu refuses it: {reason}", f"丹炉不接受：{zh}")
        self.refused[label] = ARG_RENAMES.get(name, name)
        if not entries:
            self.settings.pop("network_args")


def refused_settings(settings: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """What TrainConfig refuses: Danlu key (or "network_args[i]" for one entry) -> why (in English and Chinese);
    each problem refuses the first setting among its keys. Empty when accepted; the key "" when no problem names
    a setting."""
    try:
        validate_config(settings)
        return {}
    except ConfigError as exc:
        problems = exc.problems
    refused: dict[str, tuple[str, str]] = {}
    for problem in problems:
        named = [(_setting(settings, key), key) for key in problem.keys if _setting(settings, key)]
        if named:
            setting, key = named[0]
            refused.setdefault(setting, (problem.detail, problem.detail_in("zh")) if setting == key else
                               (str(problem), problem.line_in("zh")))
    return refused or {"": (str(problems[0]), problems[0].line_in("zh"))}


def _danlu_key(settings: dict[str, Any], setting: str) -> str:
    """The config key a setting ("network_args[i]" or a key) gives a value to."""
    if _entry_index(setting) < 0:
        return setting
    name = _arg_names(settings)[_entry_index(setting)]
    return ARG_RENAMES.get(name, name)


def _entry_index(key: str) -> int:
    """i of "network_args[i]"; -1 for a Danlu key."""
    return int(key[len("network_args["):-1]) if key.startswith("network_args[") else -1


def _arg_names(settings: dict[str, Any]) -> list[str]:
    return [str(entry).partition("=")[0].strip() for entry in settings.get("network_args") or []]


def _setting(settings: dict[str, Any], key: str) -> str:
    """The setting that gave a config key its value: the key itself, or the network_args entry it was read from;
    "" when the key was not set."""
    if key in settings:
        return key
    for index, arg in enumerate(_arg_names(settings)):
        if key in (arg, ARG_RENAMES.get(arg)):
            return f"network_args[{index}]"
    return ""
