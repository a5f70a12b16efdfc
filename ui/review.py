"""What the page says about the form as it is: problems per field, the dataset and its step plan, the base model.

`review(data)` is the live view (cheap: validation, the base model's header, the dataset scan); `review(data,
full=True)` is exactly what `python -m trainer check` does (trainer.checks.preflight.run_preflight), for Check
and Start, with the checks that need torch asked of the GUI's worker process (`worker()`): this process never
imports torch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.checks.preflight import (
    dataset_problems,
    model_source_problems,
    overwrite_problems,
    run_preflight,
    scan_and_plan,
)
from trainer.common.errors import ConfigError, Problem, UserError
from trainer.common.paths import danlu_home
from trainer.config import TrainConfig
from trainer.config.io import validate_config
from trainer.dataset.plan import StepPlan
from trainer.dataset.scan import DatasetScan
from trainer.families.detect import detect_family, read_pickles_with
from trainer.families.table import FAMILY_LABELS
from trainer.run.worker import Worker

from .wording import gui_wording

WORKER_LOG = "worker.log"  # in DANLU_HOME


@dataclass
class Review:
    config: TrainConfig | None = None
    problems: list[Problem] = field(default_factory=list)  # each naming its keys: shown at their fields
    warnings: list[str] = field(default_factory=list)  # trainer's advice (check's "warning:" lines)
    scan: DatasetScan | None = None
    plan: StepPlan | None = None
    family: str | None = None  # the base model's family as detected, e.g. "sdxl"
    data: dict[str, Any] = field(default_factory=dict)  # the form's values reviewed (Page.reviewed keeps them)

    def errors_in(self, lang: str) -> dict[str, str]:
        """The first problem of each field it names (what the field shows in place of its help), in lang."""
        errors: dict[str, str] = {}
        for problem in self.problems:
            for key in problem.keys:
                if key in TrainConfig.model_fields:
                    errors.setdefault(key, gui_wording(problem.detail_in(lang), lang))
        return errors

    @property
    def family_label(self) -> str | None:
        return FAMILY_LABELS.get(self.family) if self.family else None


def review(data: dict[str, Any], full: bool = False) -> Review:
    result = Review(family=_family(data.get("pretrained_model_name_or_path")), data=data)
    try:
        result.config = validate_config(data)
    except ConfigError as exc:
        result.problems = list(exc.problems)
        return result
    if full:
        return _full(result)
    result.problems = model_source_problems(result.config)
    result.scan, _, result.plan = scan_and_plan(result.config)
    result.problems += dataset_problems(result.config, result.scan)
    if result.plan is not None:  # before Start, not after: an earlier LoRA of that name is never replaced silently
        result.problems += overwrite_problems(result.config, result.plan)
    return result


@functools.cache
def worker() -> Worker:
    """The GUI's worker process (trainer/run/worker.py): the LR curve and the machine's abilities, asked there."""
    return Worker(danlu_home() / WORKER_LOG)


def start_worker() -> None:
    """What the GUI process does once at its start: the worker begins loading torch, and reads the torch pickles
    (.ckpt/.pt base models) the page's model detection meets, so this process never imports torch."""
    worker().start()
    read_pickles_with(worker().pickle_names)


def _full(result: Review) -> Review:
    try:
        pre = run_preflight(result.config, gpu=worker().gpu_facts(), machine=worker().machine_problems)
    except UserError as exc:  # ConfigError lists every problem; another UserError is one
        result.problems = list(exc.problems)
        result.scan, _, result.plan = scan_and_plan(result.config)
        return result
    result.scan, result.plan, result.warnings = pre.scan, pre.plan, pre.warnings
    return result


def _family(source: Any) -> str | None:
    if not source:
        return None
    try:
        return detect_family(str(Path(str(source)).expanduser()))
    except (OSError, ValueError):
        return None
