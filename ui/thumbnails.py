"""Pictures shown inside the page's HTML (the Compare and Try grids): a small JPEG as a data URL, made once per file
version, since Gradio serves no files from a user's output folder."""

from __future__ import annotations

import base64
import functools
import io
from pathlib import Path

from PIL import Image


def data_url(path: str | Path, size: int, quality: int = 85) -> str:
    """The picture at path, shrunk to fit size × size px, as a data: URL."""
    return _encoded(str(path), Path(path).stat().st_mtime, size, quality)


@functools.lru_cache(maxsize=512)
def _encoded(path: str, mtime: float, size: int, quality: int) -> str:
    """mtime keys the cache: a file written again is encoded again."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
