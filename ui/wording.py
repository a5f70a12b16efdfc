"""Messages in the page's words: the trainer's problems, advice and hints name settings as a config file does
("set overwrite: true"), which is right for the CLI and a YAML file; the page has a checkbox under Paths › Output ›
Advanced. gui_wording turns each "set KEY: VALUE" of a known field into what to do there (tick or set it, and
where it is), in the page's language; everything else in the text stays as it was."""

from __future__ import annotations

import re

from .fields import FIELD_SPECS, FieldSpec
from .i18n import t

# The file wording: "set overwrite: true", "set mixed_precision: bf16 (RTX 30xx ...)", "设 mixed_precision: bf16".
_SETTING = re.compile(r"(?:\bset|设为?|设置)\s*(\w+): ([^\s,;，；、（）()]+)")


def gui_wording(text: str, lang: str) -> str:
    """text with every "set KEY: VALUE" of a form field said as the page's action at that field."""
    def say(match: re.Match) -> str:
        key, value = match.groups()
        spec = FIELD_SPECS.get(key)
        if spec is None:
            return match.group(0)
        where = field_place(spec, lang)
        if spec.kind == "checkbox" and value.lower() in ("true", "false"):
            tick = "wording_tick" if value.lower() == "true" else "wording_untick"
            return t(lang, tick, setting=key, where=where)
        return t(lang, "wording_set", setting=key, value=value, where=where)

    return _SETTING.sub(say, text)


def field_place(spec: FieldSpec, lang: str) -> str:
    """Where a field is on the page: its tab, its group and, for an advanced one, the Advanced box."""
    parts = [t(lang, f"tab_{spec.tab}"), t(lang, f"group_{spec.group}")] + ([t(lang, "advanced")] if spec.advanced
                                                                              else [])
    return " › ".join(parts)
