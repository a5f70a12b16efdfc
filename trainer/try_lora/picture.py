"""The labelled grid PNG (PIL, torch-free): column labels on top, row labels on the left, the settings JSON in the
PNG's text chunk (iTXt "danlu_try", UTF-8).

Labels may be Chinese (prompts, file names). PIL's own font has no CJK glyphs, so a CJK font is looked for among
the usual system fonts (Windows, macOS, Linux Noto/WenQuanYi) or DANLU_FONT; without one, a label with characters
the font cannot draw is replaced by its plain-ASCII part and the prompt number, and `font_note` says so once.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

FONT_ENV = "DANLU_FONT"  # a .ttf/.ttc/.otf that draws the labels (any language it covers)
CJK_FONTS = (
    "C:/Windows/Fonts/msyh.ttc", "C:/Windows/Fonts/msyh.ttf", "C:/Windows/Fonts/simhei.ttf",
    "C:/Windows/Fonts/simsun.ttc", "/System/Library/Fonts/PingFang.ttc", "/System/Library/Fonts/STHeiti Medium.ttc",
    "/Library/Fonts/Arial Unicode.ttf", "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc", "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/wenquanyi/wqy-microhei/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
)
TEXT_KEY = "danlu_try"
FONT_PX = 16
PAD = 6
MIN_CELL_PX = 128  # tiny test models' 64 px pictures are drawn larger, so their labels fit
LABEL_CHARS = 60  # a label is cut to this many characters (the JSON holds the whole prompt)


@lru_cache(maxsize=4)
def label_font(size: int = FONT_PX) -> tuple[ImageFont.ImageFont, bool]:
    """(font, draws CJK): DANLU_FONT, else the first CJK system font found, else PIL's own (Latin only)."""
    for candidate in (os.environ.get(FONT_ENV), *CJK_FONTS):
        if candidate and Path(candidate).is_file():
            try:
                return ImageFont.truetype(candidate, size), True
            except OSError:
                continue
    return ImageFont.load_default(size=size), False


def drawable(text: str, cjk: bool) -> str:
    """The label as the font can draw it: as it is with a CJK font, else its Latin-1 characters only."""
    text = text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "…"
    if cjk or all(ord(ch) < 256 for ch in text):
        return text
    kept = "".join(ch if ord(ch) < 256 else "" for ch in text).strip(" :,")
    return f"{kept} [?]" if kept else "[?]"


def font_note() -> str | None:
    """Why labels lost characters, or None when a CJK font was found."""
    return None if label_font()[1] else (f"no CJK font found: non-Latin label text is left out (the prompts are in "
                                         f"grid.json); set {FONT_ENV} to a .ttf/.ttc font to draw it")


def grid_image(cells: dict[tuple[int, int], Image.Image], row_labels: list[list[str]],
               col_labels: list[list[str]]) -> Image.Image:
    """Cells (row, col) -> picture, each scaled to the first cell's size; missing cells stay grey."""
    font, cjk = label_font()
    rows = [[drawable(text, cjk) for text in label] for label in row_labels]
    cols = [[drawable(text, cjk) for text in label] for label in col_labels]
    line = FONT_PX + 4
    width, height = _cell_size(next(iter(cells.values()), None), max(map(len, rows), default=1) * line + 2 * PAD)
    left = min(max((_text_width(font, t) for label in rows for t in label), default=0) + 2 * PAD, 320)
    top = max((len(label) for label in cols), default=0) * line + 2 * PAD
    canvas = Image.new("RGB", (left + width * len(cols), top + height * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, label in enumerate(cols):
        for k, text in enumerate(label):
            draw.text((left + c * width + PAD, PAD + k * line), _fit(font, text, width - PAD), fill="black", font=font)
    for r, label in enumerate(rows):
        for k, text in enumerate(label):
            draw.text((PAD, top + r * height + PAD + k * line), _fit(font, text, left - PAD), fill="black", font=font)
    for r in range(len(rows)):
        for c in range(len(cols)):
            picture = cells.get((r, c))
            box = (left + c * width, top + r * height)
            if picture is None:
                draw.rectangle([box, (box[0] + width - 1, box[1] + height - 1)], fill=(200, 200, 200))
            else:
                canvas.paste(picture.convert("RGB").resize((width, height), Image.Resampling.LANCZOS), box)
    return canvas


def _cell_size(first: Image.Image | None, least_height: int) -> tuple[int, int]:
    """The first picture's size, scaled up (aspect kept) so a cell holds its row's label and a column's label
    (MIN_CELL_PX) fits above it."""
    width, height = first.size if first else (MIN_CELL_PX, MIN_CELL_PX)
    scale = max(1.0, least_height / height, MIN_CELL_PX / width)
    return round(width * scale), round(height * scale)


def _text_width(font: ImageFont.ImageFont, text: str) -> int:
    box = font.getbbox(text)
    return int(box[2] - box[0])


def _fit(font: ImageFont.ImageFont, text: str, width: int) -> str:
    """The text cut (with …) to fit `width` pixels."""
    while text and _text_width(font, text) > width:
        text = text[:-2] + "…" if len(text) > 1 else ""
    return text


def save_grid(image: Image.Image, path: Path, settings: dict[str, Any]) -> None:
    """The PNG with the settings in its iTXt chunk, written next to `path` and renamed into place."""
    info = PngInfo()
    info.add_itxt(TEXT_KEY, json.dumps(settings, ensure_ascii=False))
    tmp = path.with_name(f".{path.name}.partial")
    image.save(tmp, "PNG", pnginfo=info)
    os.replace(tmp, path)


def read_settings(path: Path) -> dict[str, Any] | None:
    """The settings a grid PNG carries, or None."""
    with Image.open(path) as image:
        text = image.text.get(TEXT_KEY) if hasattr(image, "text") else None
    return json.loads(text) if text else None
