"""Rendering a try grid into a folder, cell by cell, so whoever watches sees each cell as it finishes.

    OUT/progress.jsonl   one JSON object a line, flushed: started (the model loading), plan (total, labels,
                         settings), base (a control picture), cell (its row, col, picture, effect size, health),
                         finished (status, grid, json) or error
    OUT/base/p1-s1.png   the base model's picture of each prompt and seed (the controls effect sizes measure from)
    OUT/cells/r00-c00.png
    OUT/grid.png         the labelled grid, the settings in its text chunk; OUT/grid.json: settings, cells, summary
    OUT/STOP             written by the GUI (or a SIGTERM): the grid ends after the current cell, with what is done

Order: the base pictures first (strength-0 cells are those pictures, not rendered again), then each file at each
strength, so the weights change once per file and strength. Seeds are fixed: a rerun (`--again grid.json`) gives
the same pixels on the same machine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from trainer.common.files import atomic_write_text
from trainer.try_lora.effects import effect_size, health, seed_spread, summary
from trainer.try_lora.grid import GRID_FILE, GRID_JSON, PROGRESS_FILE, Cell, GridSpec
from trainer.try_lora.picture import font_note, grid_image, save_grid
from trainer.try_lora.session import TrySession, sampling_config


class GridWriter:
    """progress.jsonl and the pictures of one grid folder."""

    def __init__(self, out: Path, say: Callable[[str], None]):
        self.out, self.say = out, say
        for sub in ("cells", "base"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        self._progress = open(out / PROGRESS_FILE, "a", encoding="utf-8")

    def event(self, kind: str, **fields: Any) -> None:
        self._progress.write(json.dumps({"type": kind, "time": round(time.time(), 3), **fields},
                                        ensure_ascii=False) + "\n")
        self._progress.flush()

    def picture(self, name: str, image: np.ndarray) -> str:
        path = self.out / name
        tmp = path.with_name(f".{path.name}.partial")
        Image.fromarray(image).save(tmp, "PNG")
        tmp.replace(path)  # the page never reads half a picture
        return str(path)

    def failed(self, exc: BaseException) -> None:
        """The error and a failed end: what the page shows in place of the grid."""
        problems = getattr(exc, "problems", None)  # a UserError: its words in both languages, for the GUI
        self.event("error", message=str(getattr(exc, "message", exc)), hint=getattr(exc, "hint", ""),
                   zh=problems[0].detail_in("zh") if problems else "")
        self.event("finished", status="failed")

    def close(self) -> None:
        self._progress.close()


def new_session(spec: GridSpec) -> TrySession:
    """The base model of `spec` loaded afresh (the CLI's one grid; trainer/try_lora/serve.py keeps one instead)."""
    return TrySession(sampling_config(spec.base, spec.run))


def render_grid(spec: GridSpec, out: Path, stopped: Callable[[], bool], say: Callable[[str], None] = print,
                session_for: Callable[[GridSpec], TrySession] = new_session) -> dict[str, Any]:
    """Render every cell into `out`; returns grid.json's content. `stopped()` is asked between cells;
    `session_for(spec)` gives the loaded base model."""
    spec.check()
    cells = spec.cells()
    out.mkdir(parents=True, exist_ok=True)
    writer = GridWriter(out, say)
    try:
        started = time.monotonic()
        writer.event("started")  # the page: loading the model now, no longer waiting behind another grid
        session = session_for(spec)
        session.keep_files({lora.path for lora in spec.loras})
        for lora in spec.loras:
            session.read(lora.path)
        row_axes, col_axes = spec.layout()
        rows, cols = spec.labels(row_axes), spec.labels(col_axes)
        session.grids += 1
        writer.event("plan", total=len(cells), rows=rows, cols=cols, row_axes=row_axes, col_axes=col_axes,
                     settings=spec.to_json(),  # the page words the labels in its language from these
                     family=session.family, device=str(session.device), model_kept=session.grids > 1,
                     ready_s=round(time.monotonic() - started, 2))
        say(f"{len(cells)} cells ({len(rows)} rows x {len(cols)} columns) on {session.family}, {session.device}"
            + (f", the model kept loaded (grid {session.grids})" if session.grids > 1 else ""))
        done = _render_cells(spec, cells, session, writer, stopped)
        return _finish(spec, cells, done, writer, "completed" if len(done["results"]) == len(cells) else "stopped")
    except BaseException as exc:
        writer.failed(exc)
        raise
    finally:
        writer.close()


def _render_cells(spec: GridSpec, cells: list[Cell], session: TrySession, writer: GridWriter,
                  stopped: Callable[[], bool]) -> dict[str, Any]:
    size = session.config.resolution_wh
    prompts = [spec.prompt(index, size) for index in range(len(spec.prompts))]
    bases: dict[tuple[int, int], np.ndarray] = {}
    results: list[dict[str, Any]] = []
    done: dict[str, Any] = {"bases": bases, "results": results}
    session.use(None)
    for prompt, seed in sorted({(cell.prompt, cell.seed) for cell in cells}):
        if stopped():
            return done
        bases[prompt, seed] = image = session.render(prompts[prompt], seed, spec.sampler)
        writer.event("base", prompt=prompt, seed=seed, path=writer.picture(f"base/p{prompt + 1}-s{seed}.png", image))
    order = sorted(cells, key=lambda c: (c.strength != 0, c.lora, c.strength, c.prompt, c.seed))
    for cell in order:
        if stopped():
            return done
        path = spec.loras[cell.lora].path
        session.use(path, cell.strength)
        base = bases[cell.prompt, cell.seed]
        image = base if cell.strength == 0 else session.render(prompts[cell.prompt], cell.seed, spec.sampler)
        result = {"row": cell.row, "col": cell.col, "lora": cell.lora, "label": spec.loras[cell.lora].label,
                  "strength": cell.strength, "seed": cell.seed, "prompt": cell.prompt,
                  "effect": round(effect_size(image, base), 5), "health": health(image),
                  "path": writer.picture(f"cells/r{cell.row:02d}-c{cell.col:02d}.png", image)}
        results.append({**result, "image": image})
        writer.event("cell", done=len(results), total=len(cells), **result)
        writer.say(f"[{len(results)}/{len(cells)}] {result['label']} x{cell.strength:g} seed {cell.seed} "
                   f"P{cell.prompt + 1}: effect {result['effect']:.4f}, {result['health']}")
    return done


def _finish(spec: GridSpec, cells: list[Cell], done: dict[str, Any], writer: GridWriter,
            status: str) -> dict[str, Any]:
    results, bases = done["results"], done["bases"]
    row_axes, col_axes = spec.layout()
    settings = spec.to_json()
    pictures = {(r["row"], r["col"]): Image.fromarray(r["image"]) for r in results}
    grid_path, json_path = writer.out / GRID_FILE, writer.out / GRID_JSON
    save_grid(grid_image(pictures, spec.labels(row_axes), spec.labels(col_axes)), grid_path, settings)
    base_spread = {p: seed_spread([bases[p, s] for s in spec.seeds if (p, s) in bases])
                   for p in range(len(spec.prompts))}
    record = {"settings": settings, "status": status, "effect_space": "pixel RMS distance, RGB in [0, 1]",
              "rows": spec.labels(row_axes), "cols": spec.labels(col_axes), "row_axes": row_axes,
              "col_axes": col_axes, "total": len(cells), "font_note": font_note(),
              "cells": [{k: v for k, v in r.items() if k != "image"} for r in results],
              "summary": summary(results, base_spread), "base_seed_spread": base_spread}
    atomic_write_text(json_path, json.dumps(record, ensure_ascii=False, indent=1))
    writer.event("finished", status=status, grid=str(grid_path), json=str(json_path), cells=len(results))
    writer.say(f"{status}: {grid_path} ({len(results)} of {len(cells)} cells), settings and effects in {json_path}")
    return record
