"""Paths as another computer wrote them: a Windows config (C:\\data\\img, D:/lora/10_x) read on Linux keeps its text.

pathlib on Linux takes a backslash for part of a name, so C:\\data\\img would have no parent (".") and one long
name; these helpers split at either separator and keep the rest of the text as it was written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_LAST = re.compile(r"^(?P<parent>.*)(?P<sep>[\\/])(?P<name>[^\\/]*)$")


def split_folder(text: str) -> tuple[str, str, str]:
    """(parent, separator, last name) of a folder path written on any system; ("", "", text) without a separator."""
    trimmed = text.rstrip("\\/") or text
    match = _LAST.match(trimmed)
    if match is None:
        return "", "", trimmed
    parent = match["parent"]
    if parent == "" or re.fullmatch(r"[A-Za-z]:", parent):  # "/" or "C:\": the root keeps its separator
        parent += match["sep"]
    return parent, match["sep"], match["name"]


def parent_of(text: str) -> str:
    return split_folder(text)[0] or "."


def name_of(text: str) -> str:
    return split_folder(text)[2]


def with_name(text: str, name: str) -> str:
    """The same folder path with its last name replaced, in the separators it was written with."""
    parent, sep, _ = split_folder(text)
    if not sep:
        return name
    return parent + name if parent.endswith(sep) else parent + sep + name


def usable_here(key: str, value: Any) -> bool:
    """Whether an imported value of a path key can be used on this computer: the file or folder exists (an
    output_dir: its parent, as the run creates it), the base model may also be a Hugging Face repo id (owner/name),
    and inline sample prompts (a list) are data, not a path. An empty value would only erase the form's own."""
    if value is None or value == "":
        return False
    if not isinstance(value, str):
        return True
    path = Path(value).expanduser()
    if path.exists() or (key == "output_dir" and path.parent.is_dir() and path.parent != Path(".")):
        return True
    return key == "pretrained_model_name_or_path" and _is_repo_id(value)


def _is_repo_id(text: str) -> bool:
    """owner/name as the Hub spells it, never a path of this or another system (C:\\x, /x, ./x, ~/x)."""
    return re.fullmatch(r"[\w.-]+/[\w.-]+", text) is not None and not text.startswith((".", "~"))
