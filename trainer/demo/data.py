"""A small synthetic captioned dataset in kohya's folder layout, for tests and the offline demo.

train_data_dir/
  5_circle/  circle_00.png + circle_00.txt ...   (6 images, repeats 5)
  3_square/  square_00.png + square_00.txt ...   (4 images, repeats 3)

Images come in three sizes (square, landscape, portrait) so aspect-ratio buckets get more than one
member; the last image of each folder has no caption file so the class-token fallback is used.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "orange": (245, 140, 30),
    "purple": (140, 60, 180),
}
SIZES: tuple[tuple[int, int], ...] = ((96, 96), (128, 96), (96, 128))  # (width, height)
# (folder name, shape, image count)
FOLDERS: tuple[tuple[str, str, int], ...] = (("5_circle", "circle", 6), ("3_square", "square", 4))


def build_demo_dataset(root: Path, seed: int = 0) -> Path:
    """Writes the dataset under `root` and returns its train_data_dir (`root / "train"`)."""
    rng = random.Random(seed)
    train_dir = Path(root) / "train"
    for folder, shape, count in FOLDERS:
        out = train_dir / folder
        out.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, caption = _draw(rng, shape, SIZES[i % len(SIZES)])
            stem = out / f"{shape}_{i:02d}"
            image.save(stem.with_suffix(".png"))
            if i < count - 1:
                stem.with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
    return train_dir


def _draw(rng: random.Random, shape: str, size: tuple[int, int]) -> tuple[Image.Image, str]:
    """One shape of a random color on a plain background of another color; returns image and caption."""
    fg_name, bg_name = rng.sample(sorted(COLORS), 2)
    width, height = size
    image = Image.new("RGB", size, COLORS[bg_name])
    side = rng.randint(min(size) // 3, min(size) * 2 // 3)
    left = rng.randint(0, width - side)
    top = rng.randint(0, height - side)
    box = (left, top, left + side, top + side)
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse(box, fill=COLORS[fg_name])
    else:
        draw.rectangle(box, fill=COLORS[fg_name])
    return image, f"{fg_name} {shape}, on {bg_name} background"


def demo_prompts() -> list[str]:
    """Sample prompts in sd-scripts' format (--w/--h size, --s steps, --l CFG scale, --d seed)."""
    return [
        "red circle, on white background --w 64 --h 64 --s 8 --l 5 --d 1",
        "blue square, on yellow background --w 64 --h 64 --s 8 --l 5 --d 2",
    ]
