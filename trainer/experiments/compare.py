"""What the Compare view shows of a sweep: each run's loss curve and the preview grid (prompt x epoch x run).

Read from sweep.json and each run's events.jsonl, so it works while the sweep still runs (the grid fills in)
and after a restart. Pure file reading, no torch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from trainer.experiments.sweep_run import read_sweep
from trainer.run.state import RunReader, RunState, Sample

SAMPLE_INDEX = re.compile(r"-p(\d+)\.[a-z]+$")  # the prompt index in a preview's name, e0004-s000120-p0.png


def compare(sweep_dir: Path | str) -> dict[str, Any]:
    """{"runs": [{label, settings, status, run_dir, losses: [(step, loss)], smoothed: [(step, loss)]}],
        "grid": {prompt index: {epoch: {label: image path}}}, "epochs": [...], "prompts": [...]}

    A grid cell holds the epoch's last preview (with sample_every_n_steps an epoch can have several); every
    run made it from the same prompt and seed. A run that has not started yet has no curve and no cells;
    "prompts" are the lines the runs were given (with their --d seed), by index."""
    record = read_sweep(sweep_dir)
    runs: list[dict[str, Any]] = []
    grid: dict[int, dict[int, dict[str, str]]] = {}
    for run in record["runs"]:
        state = RunReader(run["run_dir"]).update() if run["run_dir"] else RunState()
        runs.append({"label": run["label"], "settings": run["settings"], "status": run["status"],
                     "run_dir": run["run_dir"], "losses": state.losses, "smoothed": state.smoothed_losses})
        for (index, epoch), path in _last_per_epoch(state.sample_list).items():
            grid.setdefault(index, {}).setdefault(epoch, {})[run["label"]] = path
    epochs = sorted({epoch for cells in grid.values() for epoch in cells})
    return {"runs": runs, "grid": grid, "epochs": epochs, "prompts": record["prompts"]}


def _last_per_epoch(samples: list[Sample]) -> dict[tuple[int, int], str]:
    """(prompt index, epoch) -> the path of the last preview of that prompt in that epoch."""
    cells: dict[tuple[int, int], str] = {}
    for sample in samples:  # in the order written: a later step replaces an earlier one
        match = SAMPLE_INDEX.search(sample.path)
        if match:
            cells[(int(match.group(1)), sample.epoch)] = sample.path
    return cells
