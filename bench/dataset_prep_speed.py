"""How long the dataset preparation steps take on a folder of photo-sized images, to know which the GUI may run
while a user waits and which need a background job.

    .venv/bin/python bench/dataset_prep_speed.py [--images N] [--side PX]

Builds N JPEG images of PX x PX (smooth noise, like photos) with a caption each in a temporary folder, then
times: the full image check (a decode, SHA-256 and dHash of every image, caption checks), the caption reading
and the tag frequency table, planning a bulk edit (trigger word + dedupe), applying it with its backup, and undo.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainer.config import TrainConfig  # noqa: E402
from trainer.dataset.caption_edit import apply_changes, caption_files, parse_edit, plan_edit, tag_frequency, undo  # noqa: E402
from trainer.dataset.image_check import Limits, check_images  # noqa: E402


def build(folder: Path, count: int, side: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(count):
        small = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(small).resize((side, side), Image.Resampling.BICUBIC).save(folder / f"{i:04}.jpg", quality=90)
        (folder / f"{i:04}.txt").write_text(f"1girl, tag{i % 17}, tag{i % 5}, 1girl", encoding="utf-8")


def timed(name: str, work) -> object:
    start = time.perf_counter()
    result = work()
    print(f"| {name} | {time.perf_counter() - start:.2f} |")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--side", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        build(root / "10_x", args.images, args.side)
        print(f"{datetime.date.today()}, {os.cpu_count()} cores, {args.images} JPEG images of {args.side} px\n")
        print("| step | seconds |\n|---|---|")
        limits = Limits.from_config(TrainConfig(resolution=1024))
        timed("dataset-check (check_images)", lambda: check_images(root, limits, ".txt"))
        timed("dataset-check again, no image changed (the Dataset tab after an edit)",
              lambda: check_images(root, limits, ".txt"))
        files = timed("read the captions (caption_files)", lambda: caption_files(root, ".txt"))
        timed("tag frequency table", lambda: tag_frequency(files))
        changes = timed("plan --prefix zkz --dedupe", lambda: plan_edit(files, parse_edit("zkz", dedupe=True)))
        timed(f"apply {len(changes)} changes with backup", lambda: apply_changes(root, changes, "bench"))
        timed("undo", lambda: undo(root))


if __name__ == "__main__":
    main()
