"""Where Danlu writes: a place is checked before the work starts, and only what Danlu wrote is ever replaced.

Each check returns Problems naming the key (a config key, or a tool's "-o"), so `check`, `train`, the LoRA tools
and the GUI say the same thing before anything is loaded or written. A model folder `lora merge` writes carries
MODEL_MARKER: the one kind of existing folder --overwrite replaces.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from trainer.common.errors import Problem

MODEL_MARKER = "danlu_merge.json"  # in every model folder `lora merge` saves, next to diffusers' model_index.json
_FOLDER_HINT = "choose a folder you can write to"
_FOLDER_HINT_ZH = "请选择一个有写入权限的文件夹"


def file_place_problems(path: Path, key: str, overwrite: bool) -> list[Problem]:
    """A file is to be written at path: not over a folder, not over a file unless overwrite, in a writable
    folder."""
    path = Path(path)
    if path.is_dir():
        return [Problem((key,), f"'{path}' is a folder", "give a file name, e.g. inside that folder",
                        zh=f"'{path}' 是文件夹", hint_zh="请填文件名，例如放在这个文件夹里")]
    if path.exists() and not overwrite:
        return [_exists(key, path)]
    return folder_place_problems(path.parent, key)


def _exists(key: str, path: Path) -> Problem:
    return Problem((key,), f"'{path}' already exists", "give another name, or add --overwrite to replace it",
                   zh=f"'{path}' 已经存在", hint_zh="请换个名字，或勾选“覆盖已有文件”（命令行加 --overwrite）来替换它")


def model_folder_problems(path: Path, key: str, overwrite: bool) -> list[Problem]:
    """A model folder is to be written at path: an existing one is replaced only with overwrite, and only when
    Danlu wrote it (it holds model_index.json and MODEL_MARKER); any other folder or file is never deleted."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return folder_place_problems(path.parent, key)
    if not overwrite:
        return [_exists(key, path)]
    if not is_danlu_model_folder(path):
        what, what_zh = ("a folder", "文件夹") if path.is_dir() else ("a file", "文件")
        return [Problem((key,), f"'{path}' is {what} Danlu did not write as a merged model (no model_index.json "
                        f"and {MODEL_MARKER} in it); --overwrite replaces only such folders and never deletes "
                        "anything else", "give a new folder name",
                        zh=f"'{path}' 这个{what_zh}不是丹炉写出的合并模型"
                        f"（里面没有 model_index.json 和 {MODEL_MARKER}）；"
                        "覆盖只会替换这类文件夹，绝不删除别的东西", hint_zh="请换一个新的文件夹名")]
    return folder_place_problems(path.parent, key)


def is_danlu_model_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and (path / "model_index.json").is_file() \
        and (path / MODEL_MARKER).is_file()


def folder_place_problems(folder: Path, key: str, need_bytes: int = 0) -> list[Problem]:
    """folder is where files go (made if missing): neither it nor a folder above may be a file, the nearest one
    that exists must be writable, and hold need_bytes free."""
    existing = Path(folder).expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return [Problem((key,), f"'{existing}' is a file, not a folder", _FOLDER_HINT,
                        zh=f"'{existing}' 是文件，不是文件夹", hint_zh=_FOLDER_HINT_ZH)]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [Problem((key,), f"'{existing}' cannot be written (read-only, or no permission)", _FOLDER_HINT,
                        zh=f"'{existing}' 无法写入（只读，或没有权限）", hint_zh=_FOLDER_HINT_ZH)]
    free = shutil.disk_usage(existing).free
    if free < need_bytes:
        return [Problem((key,), f"'{existing}' has {_size(free)} free, and this needs about {_size(need_bytes)}",
                        "free some space, or choose a folder on another disk",
                        zh=f"'{existing}' 只剩 {_size(free)} 空间，这里大约需要 {_size(need_bytes)}",
                        hint_zh="请清理一些空间，或换到另一个磁盘上的文件夹")]
    return []


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"
