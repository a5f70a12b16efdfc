"""Errors caused by what a user gave us: shown as a clear message, never as a traceback."""

from __future__ import annotations


class UserError(Exception):
    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(UserError):
    """Each entry of `problems` is one line naming the key, the bad value and what is allowed."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems
