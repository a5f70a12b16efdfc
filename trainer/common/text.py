"""Reading a text file a user wrote (config, preset, prompts, caption) in the encodings their editors save.

UTF-8 (with or without a BOM), UTF-16 with a BOM (Windows Notepad's "Unicode") and GBK (Chinese Windows' ANSI
code page) are read; anything else, and a file that cannot be opened, is a UserError naming the file and what to do.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from trainer.common.errors import UserError

_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
FALLBACK_ENCODING = "gbk"  # tried after UTF-8: what Chinese Windows editors save as "ANSI"
SAVE_AS = "save it as UTF-8 (in Notepad: File > Save as > Encoding: UTF-8)"
SAVE_AS_ZH = "请另存为 UTF-8 编码（记事本：文件 > 另存为 > 编码：UTF-8）"


def read_user_text(path: Path, key: str | None = None) -> str:
    """The text of path; key: the config key or option that named the file, for the message."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise UserError(f"'{path}' is a folder, not a text file", "give the file inside it", key,
                        zh=f"'{path}' 是文件夹，不是文本文件", hint_zh="请填写里面的文件") from None
    except FileNotFoundError:
        raise UserError(f"'{path}' does not exist", "check the path", key, zh=f"'{path}' 不存在",
                        hint_zh="请检查路径") from None
    except OSError as exc:
        raise UserError(f"'{path}' cannot be read ({exc.strerror or exc})",
                        "check that the file exists and that you may read it", key,
                        zh=f"'{path}' 无法读取（{exc.strerror or exc}）",
                        hint_zh="请确认文件存在，并且有读取权限") from None
    return decode_user_text(data, path, key)


def decode_user_text(data: bytes, path: Path | str, key: str | None = None) -> str:
    """data decoded as read_user_text does; path names the file in the message."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return _decode(data, encoding, path, key)
    if b"\x00" in data:  # UTF-16 without a BOM, or not text at all
        raise UserError(f"'{path}' is not UTF-8 or GBK text (it holds NUL bytes: UTF-16 without a BOM, or a "
                        "binary file)", SAVE_AS, key,
                        zh=f"'{path}' 不是 UTF-8 或 GBK 文本（含有 NUL 字节：可能是不带 BOM 的 UTF-16，或二进制文件）",
                        hint_zh=SAVE_AS_ZH)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    return _decode(data, FALLBACK_ENCODING, path, key)


def _decode(data: bytes, encoding: str, path: Path | str, key: str | None) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        shown = "UTF-8 or GBK" if encoding == FALLBACK_ENCODING else encoding.upper().replace("-SIG", "")
        raise UserError(f"'{path}' is not {shown} text (byte {exc.start} cannot be read)", SAVE_AS, key,
                        zh=f"'{path}' 不是 {shown.replace(' or ', ' 或 ')} 文本（第 {exc.start} 个字节无法读取）",
                        hint_zh=SAVE_AS_ZH) from None
