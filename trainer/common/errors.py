"""Errors caused by what a user gave us: shown as a clear message, never as a traceback.

A Problem carries the config keys it is about next to its text, so the CLI prints the line, the GUI shows it at
its field, an importer drops the setting behind it and a child process hands it on as JSON
(trainer/run/child.py), without reading key names back out of the text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config. str() is the line users read: "key: message; hint"."""

    keys: tuple[str, ...]  # the config keys it is about, the one to change first; () when it names none
    message: str  # what is wrong (and, unless hint says it, what to do)
    hint: str = ""  # what to do
    named: bool = False  # the message names its keys itself (a rule between keys): the line does not repeat them
    where: str = ""  # the file or sweep run it belongs to, written first: "bad.yaml: ", "[network_dim=8] "

    @property
    def detail(self) -> str:
        """What the field of its key shows: the line without the file and the keys."""
        return self.message + (f"; {self.hint}" if self.hint else "")

    def within(self, where: str) -> Problem:
        """The same problem, found in a file or a run: where comes first on its line."""
        return replace(self, where=where + self.where)

    def __str__(self) -> str:
        head = f"{', '.join(self.keys)}: " if self.keys and not self.named else ""
        return self.where + head + self.detail


class UserError(Exception):
    """What is wrong and what to do (hint). key names the config key it is about (new code passes it rather than
    writing "key: " into the message); self.message is the line with it. problems: the same as one Problem, so
    every UserError is reported alike (the GUI, a child process's JSON)."""

    def __init__(self, message: str, hint: str = "", key: str | None = None):
        self.message = f"{key}: {message}" if key else message
        super().__init__(self.message)
        self.hint = hint
        self.problems = [Problem((key,) if key else (), message, hint)]


class ConfigError(UserError):
    """Every problem found in a config, each naming its keys, the bad value and what is allowed."""

    def __init__(self, problems: list[Problem]):
        super().__init__("\n".join(map(str, problems)))
        self.problems = list(problems)


class RuleError(ValueError):
    """A rule between keys is broken: raised in a schema validator, it reaches the user as a Problem about keys.
    The message names them itself, e.g. RuleError("full_fp16 needs mixed_precision: fp16", "full_fp16",
    "mixed_precision")."""

    def __init__(self, message: str, *keys: str):
        super().__init__(message)
        self.keys = keys
