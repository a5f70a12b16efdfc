"""Folder listings for the path pickers (ui/picker.py): the GUI runs on the user's computer, so it lists its disks.

No Gradio here. Names are shown as the file system gives them (Chinese and spaces included); hidden entries (a
leading dot) are left out; on Windows the level above a drive's root lists the drives (C:\\, D:\\ ...).
"""

from __future__ import annotations

import os
import string
from dataclasses import dataclass
from pathlib import Path

MAX_ENTRIES = 500  # a folder of 10,000 images lists its sub-folders first; the rest is cut, not the page
DRIVES = ""  # the "folder" above the drives on Windows


@dataclass(frozen=True)
class Listing:
    folder: str  # DRIVES for the list of drives
    folders: list[str]
    files: list[str]
    cut: bool = False  # more entries than MAX_ENTRIES


def start_folder(value: str | None) -> str:
    """Where a picker opens: the field's folder (a file's parent), its nearest existing parent, else the home."""
    text = (value or "").strip().strip('"')
    if text:
        path = Path(text).expanduser()
        for candidate in (path, *path.parents):
            if candidate.is_dir():
                return str(candidate)
    return str(Path.home())


def parent(folder: str) -> str:
    """One level up; from a Windows drive's root, the list of drives; the root stays the root elsewhere."""
    if folder == DRIVES:
        return DRIVES
    path = Path(folder)
    if path.parent == path:
        return DRIVES if os.name == "nt" else folder
    return str(path.parent)


def list_folder(folder: str, files: bool) -> Listing:
    """The sub-folders (and files, when a file is picked) of folder, sorted case-insensitively."""
    if folder == DRIVES:
        return Listing(DRIVES, drives(), [])
    folders, names, count = [], [], 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                count += 1
                if _is_dir(entry):
                    folders.append(entry.name)
                elif files:
                    names.append(entry.name)
    except OSError:
        return Listing(folder, [], [])
    folders.sort(key=str.casefold)
    names.sort(key=str.casefold)
    room = max(MAX_ENTRIES - len(folders), 0)
    return Listing(folder, folders[:MAX_ENTRIES], names[:room], cut=len(folders) + len(names) > MAX_ENTRIES)


def drives() -> list[str]:
    """Windows' drive roots that exist (C:\\ ...); the root elsewhere."""
    if os.name != "nt":
        return ["/"]
    return [f"{letter}:\\" for letter in string.ascii_uppercase if os.path.exists(f"{letter}:\\")]


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False
