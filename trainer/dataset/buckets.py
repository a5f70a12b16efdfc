"""Aspect-ratio buckets with kohya sd-scripts' BucketManager semantics (library/train_util.py, model_util.py)."""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from trainer.dataset.scan import Problem as ScanProblem


def make_buckets(resolution: tuple[int, int], min_reso: int, max_reso: int, step: int) -> list[tuple[int, int]]:
    """sd-scripts make_bucket_resolutions: every (w, h) on the step grid with w*h <= resolution's area."""
    max_area = resolution[0] * resolution[1]
    side = int(math.sqrt(max_area) // step) * step  # sd-scripts always offers the square bucket of that area
    buckets = {(side, side)}
    for width in range(min_reso, max_reso + 1, step):
        height = min(max_reso, (max_area // width) // step * step)
        if height >= min_reso:
            buckets.update({(width, height), (height, width)})
    return sorted(buckets)


@lru_cache(maxsize=32)
def _bucket_table(resolution: tuple[int, int], min_reso: int, max_reso: int,
                  step: int) -> tuple[tuple[tuple[int, int], ...], np.ndarray]:
    buckets = tuple(make_buckets(resolution, min_reso, max_reso, step))
    return buckets, np.array([w / h for w, h in buckets])


def _round_to_step(x: float, step: int) -> int:
    rounded = int(x + 0.5)
    return rounded - rounded % step


def _no_upscale_size(width: int, height: int, max_area: int, step: int) -> tuple[int, int]:
    """Downscale only: too-large images shrink to max_area; sd-scripts picks the rounding of w or h that
    keeps the aspect ratio closest."""
    if width * height <= max_area:
        return width, height
    aspect = width / height
    resized_w = math.sqrt(max_area * aspect)
    resized_h = max_area / resized_w
    w_rounded = _round_to_step(resized_w, step)
    h_for_w = _round_to_step(w_rounded / aspect, step)
    h_rounded = _round_to_step(resized_h, step)
    w_for_h = _round_to_step(h_rounded * aspect, step)
    if h_for_w and abs(w_rounded / h_for_w - aspect) < abs(w_for_h / max(h_rounded, 1) - aspect):
        return w_rounded, int(w_rounded / aspect + 0.5)
    return int(h_rounded * aspect + 0.5), h_rounded


def assign_bucket(width: int, height: int, *, resolution: tuple[int, int], enable_bucket: bool,
                  min_bucket_reso: int, max_bucket_reso: int, bucket_reso_steps: int,
                  bucket_no_upscale: bool) -> tuple[int, int]:
    """The (w, h) bucket an image of this size trains at."""
    if not enable_bucket:
        return tuple(resolution)
    step = bucket_reso_steps
    if bucket_no_upscale:
        resized_w, resized_h = _no_upscale_size(width, height, resolution[0] * resolution[1], step)
        # Crop (never pad) to the step grid; sd-scripts could return 0 for tiny sides, keep at least one step.
        return max(step, resized_w - resized_w % step), max(step, resized_h - resized_h % step)
    # Closest aspect ratio; every bucket is near the full area, so an exact-size match is also the argmin.
    buckets, ratios = _bucket_table(tuple(resolution), min_bucket_reso, max_bucket_reso, step)
    return buckets[int(np.abs(ratios - width / height).argmin())]


def bucket_limit_problems(root: Path, resolution: tuple[int, int], enable_bucket: bool, min_bucket_reso: int,
                          max_bucket_reso: int, bucket_reso_steps: int) -> list[ScanProblem]:
    """Bucket limits that keep images far from the training resolution, whatever the images are (sd-scripts
    refuses both): max_bucket_reso below the resolution's longer side (every bucket that is not square stays at
    or below it, e.g. 128 px at 1024), and limits that leave no bucket but the square one. Warnings of the
    dataset root."""
    if not enable_bucket:
        return []
    problems, longest = [], max(resolution)
    size = f"{resolution[0]}×{resolution[1]}"
    if max_bucket_reso < longest:
        problems.append(ScanProblem(
            root, f"max_bucket_reso {max_bucket_reso} is below the resolution {size}: no bucket side can be longer "
            f"than {max_bucket_reso} px, so every image that is not square trains at {max_bucket_reso} px or less; "
            f"set max_bucket_reso to at least {longest} (Steps › Advanced).", "warning",
            zh=f"max_bucket_reso（{max_bucket_reso}）小于训练分辨率 {size}：分桶的边长都不能超过 {max_bucket_reso}，"
               f"所以不是正方形的图都只能按 {max_bucket_reso} 像素或更小来训练；请把 max_bucket_reso 设为至少 "
               f"{longest}（步数 › 高级）。"))
    elif min_bucket_reso > min(resolution) and len(make_buckets(resolution, min_bucket_reso, max_bucket_reso,
                                                                 bucket_reso_steps)) == 1:
        problems.append(ScanProblem(
            root, f"min_bucket_reso {min_bucket_reso} leaves no bucket at the resolution {size} but the square one, "
            f"so every image is cropped to a square; set min_bucket_reso to at most {min(resolution)} "
            "(Steps › Advanced).", "warning",
            zh=f"min_bucket_reso（{min_bucket_reso}）太大：在训练分辨率 {size} 下只剩正方形一个分桶，"
               f"所有图片都会被裁成正方形；请把 min_bucket_reso 设为不超过 {min(resolution)}（步数 › 高级）。"))
    return problems
