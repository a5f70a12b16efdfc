"""Measured effects of a LoRA in a try grid, torch-free (numpy on the rendered images).

- effect size: how far a cell's image is from the base model's image at the same seed and prompt, in pixel space:
  the root mean square difference of the RGB values scaled to [0, 1]. 0 is the base picture exactly (strength
  0); a change of style or subject is typically 0.1-0.3; a burnt LoRA (noise, flat colour) reaches 0.3-0.5.
- seed spread: how much one setting's images differ across seeds, the mean pairwise RMS distance between them;
  beside it the base model's spread over the same seeds and prompts. A spread well under the base's means the
  LoRA pulls every seed to the same picture (a strong character or style, or overfitting).
- health: trainer/training/health.py's verdict on each picture (black, white, flat, NaN, noise, or ok).
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from statistics import mean
from typing import Any

import numpy as np

from trainer.training.health import classify_image


def effect_size(image: np.ndarray, base: np.ndarray) -> float:
    """RMS pixel distance in [0, 1] between two HxWx3 uint8 images of the same size."""
    if image.shape != base.shape:
        return float("nan")
    diff = image.astype(np.float64) / 255 - base.astype(np.float64) / 255
    return float(np.sqrt(np.mean(diff * diff)))


def seed_spread(images: list[np.ndarray]) -> float | None:
    """Mean pairwise RMS distance between the images of one setting at different seeds; None with one seed."""
    pairs = list(itertools.combinations(images, 2))
    return mean(effect_size(a, b) for a, b in pairs) if pairs else None


def health(image: np.ndarray) -> str:
    return classify_image(image) or "ok"


def summary(results: list[dict[str, Any]], base_spread: dict[int, float | None]) -> list[dict[str, Any]]:
    """One row per LoRA file and strength, over its seeds and prompts: mean, lowest and highest effect size, the
    seed spread (mean over prompts) against the base's, and the health verdicts that are not ok.

    results: each finished cell as {"label", "lora", "strength", "seed", "prompt", "effect", "health", "image"}
    (the image array); base_spread: prompt index -> the base model's spread across the grid's seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for cell in results:
        groups[(cell["lora"], cell["strength"])].append(cell)
    rows = []
    for (lora, strength), cells in sorted(groups.items(), key=lambda item: item[0]):
        effects = [cell["effect"] for cell in cells if np.isfinite(cell["effect"])]
        by_prompt: dict[int, list[np.ndarray]] = defaultdict(list)
        for cell in cells:
            by_prompt[cell["prompt"]].append(cell["image"])
        spreads = [s for s in (seed_spread(images) for images in by_prompt.values()) if s is not None]
        bases = [base_spread[p] for p in by_prompt if base_spread.get(p) is not None]
        broken = Counter(cell["health"] for cell in cells if cell["health"] != "ok")
        rows.append({"file": cells[0]["label"], "lora": lora, "strength": strength, "cells": len(cells),
                     "effect": _round(mean(effects)) if effects else None,
                     "effect_min": _round(min(effects)) if effects else None,
                     "effect_max": _round(max(effects)) if effects else None,
                     "seed_spread": _round(mean(spreads)) if spreads else None,
                     "base_seed_spread": _round(mean(bases)) if bases else None,
                     "broken": dict(broken)})
    return rows


def _round(value: float) -> float:
    return round(float(value), 5)
