"""Errors caused by what a user gave us: shown as a clear message, never as a traceback.

A Problem carries the config keys it is about next to its text, so the CLI prints the line, the GUI shows it at
its field, an importer drops the setting behind it and a child process hands it on as JSON
(trainer/run/child.py), without reading key names back out of the text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

MAX_TEXT = 1000  # characters of one message or hint: a value quoted in it (a huge list, a long string) is cut
MAX_PROBLEMS = 40  # problems one ConfigError lists; the rest are counted


def capped(text: str, limit: int = MAX_TEXT) -> str:
    """text, cut to about limit characters with the length it had, so no input makes a message of megabytes."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters in all)"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config. str() is the line users read: "key: message; hint". Message and hint are
    capped (MAX_TEXT)."""

    keys: tuple[str, ...]  # the config keys it is about, the one to change first; () when it names none
    message: str  # what is wrong (and, unless hint says it, what to do)
    hint: str = ""  # what to do
    named: bool = False  # the message names its keys itself (a rule between keys): the line does not repeat them
    where: str = ""  # the file or sweep run it belongs to, written first: "bad.yaml: ", "[network_dim=8] "
    zh: str = ""  # the message in Chinese (the GUI's zh page shows it; empty: not translated yet)
    hint_zh: str = ""  # the hint in Chinese

    def __post_init__(self) -> None:
        for name in ("message", "hint", "zh", "hint_zh"):
            object.__setattr__(self, name, capped(getattr(self, name)))

    @property
    def detail(self) -> str:
        """What the field of its key shows: the line without the file and the keys."""
        return self.message + (f"; {self.hint}" if self.hint else "")

    def detail_in(self, lang: str) -> str:
        """detail in the page's language: Chinese where the problem has it ("zh"), else English."""
        if lang != "zh" or not self.zh:
            return self.detail
        hint = self.hint_in(lang)
        return self.zh + (f"；{hint}" if hint else "")

    def hint_in(self, lang: str) -> str:
        """The hint in the page's language (the Chinese one goes with a Chinese message)."""
        return self.hint_zh or self.hint if lang == "zh" and self.zh else self.hint

    def line_in(self, lang: str) -> str:
        """str(self) in the page's language: the file and keys, then detail_in(lang)."""
        head = f"{', '.join(self.keys)}: " if self.keys and not self.named else ""
        return self.where + head + self.detail_in(lang)

    def within(self, where: str) -> Problem:
        """The same problem, found in a file or a run: where comes first on its line."""
        return replace(self, where=where + self.where)

    def __str__(self) -> str:
        return self.line_in("en")


class UserError(Exception):
    """What is wrong and what to do (hint). key names the config key it is about (new code passes it rather than
    writing "key: " into the message); self.message is the line with it. problems: the same as one Problem, so
    every UserError is reported alike (the GUI, a child process's JSON)."""

    def __init__(self, message: str, hint: str = "", key: str | None = None, zh: str = "", hint_zh: str = ""):
        problem = Problem((key,) if key else (), message, hint, zh=zh, hint_zh=hint_zh)
        self.message = f"{key}: {problem.message}" if key else problem.message
        super().__init__(self.message)
        self.hint = problem.hint
        self.problems = [problem]

    def message_in(self, lang: str) -> str:
        """self.message in the page's language (what an `error` event carries as message_zh)."""
        return replace(self.problems[0], hint="", hint_zh="").line_in(lang)

    def hint_in(self, lang: str) -> str:
        return self.problems[0].hint_in(lang)


class ConfigError(UserError):
    """Every problem found in a config, each naming its keys, the bad value and what is allowed; beyond
    MAX_PROBLEMS, a last line counts the rest."""

    def __init__(self, problems: list[Problem]):
        problems = list(problems)
        if len(problems) > MAX_PROBLEMS:
            rest = len(problems) - MAX_PROBLEMS + 1
            problems = problems[:MAX_PROBLEMS - 1] + [Problem((), f"... and {rest} more problems",
                                                               zh=f"……还有 {rest} 个问题")]
        self.message, self.hint, self.problems = "\n".join(map(str, problems)), "", problems
        Exception.__init__(self, self.message)  # each problem is capped already, not their lines together

    def message_in(self, lang: str) -> str:
        return "\n".join(problem.line_in(lang) for problem in self.problems)

    def hint_in(self, lang: str) -> str:
        return ""


class RuleError(ValueError):
    """A rule between keys is broken: raised in a schema validator, it reaches the user as a Problem about keys.
    The message names them itself, e.g. RuleError("full_fp16 needs mixed_precision: fp16", "full_fp16",
    "mixed_precision", zh="full_fp16 需要 mixed_precision: fp16"). A field validator raises it without keys (the
    field's key is known): its zh reaches the Problem too (trainer/config/pydantic_zh.py)."""

    def __init__(self, message: str, *keys: str, zh: str = ""):
        super().__init__(message)
        self.keys = keys
        self.zh = zh
