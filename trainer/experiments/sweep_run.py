"""Side-by-side runs (a sweep), the running: every variation of a SweepPlan trained in turn, its queue in sweep.json.

Each run is its own child process, started by trainer/runner.py exactly as the GUI starts a training (`python -m
trainer train RUN/config.yaml --run-dir RUN`, its own run folder, console.log and process.json): a crash or an
out-of-memory kill ends only that run, the GPU memory is given back before the next one, and the GUI finds the
running one as it finds any training. The sweep folder, output_dir/sweeps/<time>/, holds sweep.json:

    {"version": 1, "status": "running" | "completed" | "stopped", "pid": ..., "started_at": ...,
     "config": "/path/base.yaml" | null, "vary": {"network_dim": [8, 16]}, "prompts": ["... --d 1337"],
     "runs": [{"label": "network_dim=8", "settings": {"network_dim": 8}, "output_name": "lora-nd8",
               "run_dir": "/out/runs/20261122-101500" | null, "error": "",
               "status": "pending" | "running" | "completed" | "stopped" | "failed" | "skipped"}]}

and a STOP file there ends the sweep: the running training gets it too (it saves, then ends) and no further run
starts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from trainer.common.errors import UserError
from trainer.common.files import atomic_write_text
from trainer.config.io import validate_config
from trainer.experiments.sweep import SweepPlan, parse_vary, plan_sweep
from trainer.run.events import STOP_FILE, new_run_dir
from trainer.run.state import COMPLETED, FAILED, RUNNING, STOPPED, RunReader

SWEEP_FILE = "sweep.json"
SWEEP_VERSION = 1
PENDING, SKIPPED = "pending", "skipped"  # a run's status before it starts, and when a stop came first
POLL_S = 0.5


class Child(Protocol):
    """A started training, as trainer/runner.py's RunHandle is."""

    run_dir: Path

    @property
    def alive(self) -> bool: ...

    @property
    def exit_code(self) -> int | None: ...

    def stop(self) -> str: ...


@dataclass
class SweepRun:
    label: str
    settings: dict[str, Any]  # the varied keys' values
    output_name: str
    run_dir: Path | None = None
    status: str = PENDING  # pending, running, then completed / stopped / failed, or skipped
    error: str = ""  # why it failed

    def as_record(self) -> dict[str, Any]:
        return {"label": self.label, "settings": self.settings, "output_name": self.output_name,
                "run_dir": str(self.run_dir) if self.run_dir else None, "status": self.status, "error": self.error}


def start_child(config: dict[str, Any]) -> Child:
    """Start one training as the GUI does (trainer/runner.py): its own process, run folder and console.log. The
    runner takes a TrainConfig: the variation (which the plan checked) becomes one here."""
    from trainer.run import runner

    return runner.start(validate_config(config))


def run_sweep(plan: SweepPlan | Path | dict[str, Any], vary: dict[str, list[Any]] | None = None,
              sweep_dir: Path | None = None, runner: Callable[[dict[str, Any]], Child] = start_child,
              on_change: Callable[[SweepRun], None] | None = None) -> list[SweepRun]:
    """Train every variation, one after another; returns the runs with their status.

    plan: a SweepPlan, or a config (file or dict) planned here with `vary`. sweep.json in sweep_dir (default
    output_dir/sweeps/<time>) is rewritten at every change; its status is completed once every run had its turn
    (whatever each run's own status), stopped after a STOP or Ctrl+C. A STOP file in sweep_dir is passed on to the
    running training (it saves and ends) and starts no further run (they become skipped). A failed run does not
    stop the others. on_change(run) is called when a run starts and when it ends."""
    if not isinstance(plan, SweepPlan):
        plan = plan_sweep(plan, vary or {})
    if sweep_dir is not None and (sweep_dir / SWEEP_FILE).exists():
        raise UserError(f"sweep folder {sweep_dir} already holds a sweep", "pick a new folder for this sweep",
                        zh=f"对比队列文件夹 {sweep_dir} 里已经有一个队列", hint_zh="请为这个队列选一个新文件夹")
    sweep_dir = sweep_dir or new_sweep_dir(plan.output_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    runs = [SweepRun(label, {key: config[key] for key in plan.vary}, config["output_name"])
            for label, config in plan.runs]
    record = _Record(sweep_dir, plan, runs)

    def changed(run: SweepRun) -> None:
        record.save()
        if on_change is not None:
            on_change(run)

    stopped = True  # until every run has had its turn without a stop
    try:
        for run, (_, config) in zip(runs, plan.runs):
            if (sweep_dir / STOP_FILE).exists():
                break
            _run_one(run, config, runner, sweep_dir, changed)
        else:
            stopped = (sweep_dir / STOP_FILE).exists()  # a stop during the last run
    finally:
        for run in runs:
            run.status = SKIPPED if run.status == PENDING else run.status
        record.save(STOPPED if stopped else COMPLETED)
    return runs


def _run_one(run: SweepRun, config: dict[str, Any], runner: Callable[[dict[str, Any]], Child], sweep_dir: Path,
             changed: Callable[[SweepRun], None]) -> None:
    run.status = RUNNING
    try:
        child = runner(config)
    except UserError as exc:  # e.g. a training started from the GUI meanwhile in the same output_dir
        run.status, run.error = FAILED, exc.message
        changed(run)
        return
    run.run_dir = child.run_dir
    changed(run)
    try:
        _wait(child, sweep_dir)
    except KeyboardInterrupt:  # the child has its own session: Ctrl+C does not reach it, so stop it here
        child.stop()
        raise
    finally:
        state = RunReader(child.run_dir).update(alive=False, exit_code=child.exit_code)
        run.status = state.status
        if state.status == FAILED:
            run.error = next((b.message for b in reversed(state.banners) if b.level == "error"), "")
        changed(run)


def _wait(child: Child, sweep_dir: Path) -> None:
    forwarded = False
    while child.alive:
        if not forwarded and (sweep_dir / STOP_FILE).exists():
            (child.run_dir / STOP_FILE).touch()
            forwarded = True
        time.sleep(POLL_S)


class _Record:
    """sweep.json, rewritten whole (and atomically: a reader never sees half a file) at every change."""

    def __init__(self, sweep_dir: Path, plan: SweepPlan, runs: list[SweepRun]):
        self.path, self.plan, self.runs = sweep_dir / SWEEP_FILE, plan, runs
        self.started_at = time.time()
        self.save()

    def save(self, status: str = RUNNING) -> None:
        record = {"version": SWEEP_VERSION, "status": status, "pid": os.getpid(), "started_at": self.started_at,
                  "config": str(self.plan.config_file) if self.plan.config_file else None, "vary": self.plan.vary,
                  "prompts": self.plan.prompts, "runs": [run.as_record() for run in self.runs]}
        atomic_write_text(self.path, json.dumps(record, ensure_ascii=False, indent=1))


def read_sweep(sweep_dir: Path | str) -> dict[str, Any]:
    """sweep.json as run_sweep wrote it (the GUI's queue view reads it too)."""
    return json.loads((Path(sweep_dir) / SWEEP_FILE).read_text(encoding="utf-8"))


def new_sweep_dir(output_dir: Path) -> Path:
    """output_dir/sweeps/<YYYYmmdd-HHMMSS> (a suffix when two sweeps start in the same second)."""
    return new_run_dir(output_dir, "sweeps")


# --- command line ---------------------------------------------------------------------------------------------
def sweep_command(config: Path, items: list[str], dry_run: bool = False, sweep_dir: Path | None = None) -> bool:
    """`python -m trainer sweep`: print the plan, then run it with one line per run; False if a run failed.
    sweep_dir: where sweep.json goes (a GUI that starts this command picks it); default output_dir/sweeps/<time>."""
    plan = plan_sweep(config, parse_vary(items))
    print(plan.describe())
    if dry_run:
        return True
    sweep_dir = sweep_dir or new_sweep_dir(plan.output_dir)
    print(f"sweep folder: {sweep_dir}", flush=True)
    runs = run_sweep(plan, sweep_dir=sweep_dir, on_change=_print_run)
    print(f"sweep {read_sweep(sweep_dir)['status']}: {sweep_dir}")
    return not any(run.status == FAILED for run in runs)


def _print_run(run: SweepRun) -> None:
    if run.status == RUNNING:
        print(f"running {run.label}: {run.run_dir or ''}", flush=True)
    else:
        print(f"{run.status} {run.label}: {run.output_name}{': ' + run.error if run.error else ''}", flush=True)
