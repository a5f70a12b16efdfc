"""The learning-rate finder: a short D-Adaptation or Prodigy run whose adapted step size (d·lr) becomes the
learning rate suggested for AdamW, AdamW8bit and Lion (the seeds' recipe, automated).

The probe is the user's own config (same model, data, network, batch and loss, so the rate carries over) with
the optimizer settings of the shipped preset presets/lr-finder-<probe>.yaml: every learning rate 1 (d·lr is then
d itself), a constant schedule, no warm-up. It trains max_train_steps (fewer on a CPU), writes no samples and no
checkpoints, and its one LoRA file and lr_find.json stay in its run folder, so the user's LoRA is never touched.
It ends early once d·lr has levelled off (SettleWatch), or when the user stops it (RUN/STOP, as a training): the
suggestion then comes from the curve so far. A suggestion never reaches the rate Danlu's own advice calls too high
for the target optimizer (checks/advice.high_lr_ceiling): it is capped below, and the result says so.
"""

from __future__ import annotations

import json
import math
import statistics
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from trainer.common.errors import UserError

if TYPE_CHECKING:  # the CLI imports PROBES for its parser: the schema loads only when a probe runs
    from trainer.config import TrainConfig

RESULT_FILE = "lr_find.json"


class Probe(NamedTuple):
    preset: str     # shipped preset (presets/<name>.yaml) whose optimizer settings the probe uses
    max_steps: int  # default length; its estimate has usually settled by then
    cpu_steps: int  # default length without a GPU, where a step takes seconds: SettleWatch usually ends it sooner


# D-Adaptation settles within a few hundred steps; Prodigy grows its estimate more slowly (its preset says so too).
PROBES: dict[str, Probe] = {"DAdaptAdam": Probe("lr-finder-dadaptation", 300, 100),
                            "Prodigy": Probe("lr-finder-prodigy", 1000, 300)}
PROBE_KEYS = ("optimizer_type", "optimizer_args", "learning_rate", "unet_lr", "text_encoder_lr", "lr_scheduler")
# The optimizers a suggestion is made for, and their unet_lr as a share of the plateau: Lion's sign updates are
# larger than Adam's (its authors advise a rate 3 to 10 times lower); the seeds take a third of AdamW's.
TARGETS: dict[str, float] = {"AdamW": 1.0, "AdamW8bit": 1.0, "Lion": 1 / 3}
# text_encoder_lr: a half to a tenth of unet_lr; the suggestion takes the half, the range is shown.
TEXT_ENCODER_SHARES = (1 / 10, 1 / 2)

TOLERANCE = 0.1   # values within ±10% of the final level count as flat
FLAT_SHARE = 0.25  # the flat part must cover at least the last quarter of the probe
MIN_POINTS = 10    # fewer steps than this never count as settled
# Ending early: flat over at least half of the steps so far, and at least this many steps (a short flat start
# is not a plateau yet); checked every WATCH_S seconds.
EARLY_MIN_STEPS = 60
WATCH_S = 2.0
# A suggestion at or above high_lr_ceiling is capped to this share of it: clearly below what Danlu warns about.
CEILING_SHARE = 0.9
ENDINGS = ("completed", "settled", "stopped")  # ran its steps; ended early once flat; stopped by the user


@dataclass
class LrSuggestion:
    optimizer: str                      # the probe's optimizer (DAdaptAdam or Prodigy)
    steps: int                          # steps the probe trained
    curve: list[tuple[int, float]]      # (step, d·lr of the first trained part: the UNet/transformer)
    plateau: float                      # the suggested unet_lr for AdamW
    settled: bool                       # False: d·lr was still rising at the end, plateau is a lower bound
    plateau_from: int | None            # the step from which the curve stayed flat
    settings: dict[str, dict[str, Any]]  # optimizer -> config keys to apply in one click
    text_encoder_range: tuple[float, float]  # (AdamW's unet_lr/10, /2)
    run_dir: Path
    ended: str = "completed"  # one of ENDINGS
    # optimizer -> {"found": the probe's rate, "ceiling": where Danlu's "too high" advice starts}, where the
    # suggestion was capped below that advice (its settings hold the capped rate)
    capped: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["run_dir"] = str(self.run_dir)
        return data


def probe_config(config: TrainConfig, run_dir: Path, optimizer: str = "DAdaptAdam",
                 steps: int | None = None, cuda: bool | None = None) -> TrainConfig:
    """The user's config turned into the probe; every output goes into run_dir. cuda: whether a GPU trains it
    (None: ask torch), for the default length."""
    from trainer.config.io import validate_config

    if optimizer not in PROBES:
        raise UserError(f"lr-find: optimizer '{optimizer}' is not a probe", f"use one of {', '.join(PROBES)}",
                        zh=f"lr-find：优化器 '{optimizer}' 不能用来探测", hint_zh=f"请从 {', '.join(PROBES)} 中选一个")
    data = config.model_dump()
    data.update({key: _probe_settings(optimizer)[key] for key in PROBE_KEYS})
    data.update(
        lr_warmup_steps=0, lr_scheduler_type="", lr_scheduler_args=[],
        max_train_epochs=None,
        max_train_steps=steps or default_steps(config, optimizer, _has_cuda() if cuda is None else cuda),
        output_dir=str(run_dir), output_name=f"{config.output_name}-lrfind", overwrite=True,
        save_every_n_epochs=None, save_every_n_steps=None, save_last_n_epochs=None, save_last_n_steps=None,
        save_state=False, save_state_on_train_end=False, save_last_n_epochs_state=None,
        save_last_n_steps_state=None, resume=None,
        sample_prompts=None, sample_every_n_epochs=None, sample_every_n_steps=None, sample_at_first=False)
    return validate_config(data)


def default_steps(config: TrainConfig, optimizer: str, cuda: bool = True) -> int:
    """The probe's usual length (shorter on a CPU), but never longer than the training it is for: a probe that
    outlasts the real run costs more than it saves (the real run would then be the better experiment)."""
    from trainer.checks.preflight import scan_and_plan

    longest = PROBES[optimizer].max_steps if cuda else PROBES[optimizer].cpu_steps
    try:
        plan = scan_and_plan(config)[2]
    except ValueError:  # no images: the probe's own preflight names the problem
        plan = None
    return min(plan.total_steps, longest) if plan else longest


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _probe_settings(optimizer: str) -> dict[str, Any]:
    from trainer.presets.format import read_preset
    from trainer.presets.library import SHIPPED_DIR

    return read_preset(SHIPPED_DIR / f"{PROBES[optimizer].preset}.yaml").settings


def plateau_start(curve: list[tuple[int, float]]) -> int | None:
    """The step from which d·lr stayed flat, or None while it was still rising (or the probe was too short).

    D-Adaptation and Prodigy only ever raise d, so the curve climbs and then levels off. The final level is the
    median of the last quarter of the values; walking back from the end, the curve counts as flat while its
    running median (centred, over a twentieth of the probe, so single noisy steps do not count) stays within
    ±TOLERANCE of that level. It has settled when this flat stretch covers at least the whole last quarter.
    """
    values = [value for _, value in curve]
    if len(values) < MIN_POINTS:
        return None
    tail = math.ceil(len(values) * FLAT_SHARE)
    level = statistics.median(values[-tail:])
    if not level > 0:
        return None
    smooth = _running_median(values, len(values) // 40)
    first = len(values)
    while first > 0 and abs(smooth[first - 1] / level - 1) <= TOLERANCE:
        first -= 1
    return curve[first][0] if len(values) - first >= tail else None


def find_plateau(curve: list[tuple[int, float]]) -> float:
    """The suggested unet_lr: the median of d·lr over its flat stretch (plateau_start), robust to noisy steps.
    A curve still rising at the end gives the median of its last few values: the rate it had reached, which
    is a lower bound of the plateau."""
    if not curve:
        raise ValueError("find_plateau: the curve is empty")
    values = [value for _, value in curve]
    start = plateau_start(curve)
    if start is not None:
        return statistics.median(value for step, value in curve if step >= start)
    return statistics.median(values[-max(1, len(values) // 20):])


def _running_median(values: list[float], half: int) -> list[float]:
    """Centred, so a step up is seen where it happens, not half a window later."""
    return [statistics.median(values[max(0, i - half):i + half + 1]) for i in range(len(values))]


def settled_early(curve: list[tuple[int, float]]) -> bool:
    """d·lr has been flat for at least half of the steps so far (and EARLY_MIN_STEPS have run): more steps would
    not move the plateau."""
    start = plateau_start(curve) if len(curve) >= EARLY_MIN_STEPS else None
    return start is not None and curve[-1][0] - start >= curve[-1][0] / 2


def suggest(config: TrainConfig, curve: list[tuple[int, float]], optimizer: str, run_dir: Path,
            ended: str = "completed") -> LrSuggestion:
    """The plateau and, per target optimizer, the config keys that apply it to the user's config, each below the
    rate Danlu's advice warns about for that optimizer (capped records the rates found where they were not)."""
    from trainer.checks.advice import high_lr_ceiling

    plateau, start = find_plateau(curve), plateau_start(curve)
    settings, capped = {}, {}
    for name, share in TARGETS.items():
        rate, ceiling = plateau * share, high_lr_ceiling(config, name)
        if ceiling is not None and _round(rate) >= ceiling:
            capped[name], rate = {"found": _round(rate), "ceiling": _round(ceiling)}, ceiling * CEILING_SHARE
        settings[name] = _target_settings(config, name, rate)
    adamw = settings["AdamW"]["unet_lr"]  # the range goes with the suggestion, capped or not
    low, high = (_round(adamw * share) for share in TEXT_ENCODER_SHARES)
    return LrSuggestion(optimizer, curve[-1][0], curve, plateau, start is not None, start, settings, (low, high),
                        run_dir, ended, capped)


def _target_settings(config: TrainConfig, optimizer: str, unet_lr: float) -> dict[str, Any]:
    """Config keys for one optimizer. The user's optimizer_args stay only when they were written for this
    optimizer (another's, e.g. D-Adaptation's decouple=True, would be rejected); AdaFactor's own schedule
    cannot drive another optimizer, so it becomes the default schedule."""
    scheduler = config.lr_scheduler
    if scheduler == "adafactor":
        scheduler = type(config).model_fields["lr_scheduler"].default
    return {"optimizer_type": optimizer,
            "optimizer_args": list(config.optimizer_args) if config.optimizer_type == optimizer else [],
            "learning_rate": _round(unet_lr), "unet_lr": _round(unet_lr),
            "text_encoder_lr": _round(unet_lr * TEXT_ENCODER_SHARES[1]), "lr_scheduler": scheduler}


def _round(value: float) -> float:
    """Three significant digits: what a user types, and what the form shows without a long tail."""
    return float(f"{value:.3g}")


def read_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, d·lr of the first parameter group) from the run's step events, as the GUI's Run tab reads them."""
    from trainer.run.state import RunReader

    state = RunReader(run_dir).update()
    return [(step, value) for step, value in state.effective_lrs if math.isfinite(value) and value > 0]


def describe(result: LrSuggestion, rows: int = 10) -> str:
    """The CLI's report: a sample of the curve, the plateau, the settings per optimizer."""
    curve = result.curve
    picks = sorted({round(i * (len(curve) - 1) / max(1, rows - 1)) for i in range(rows)})
    lines = [f"lr-find: {result.optimizer} probe, {result.steps} steps, run folder {result.run_dir}",
             "d·lr (the step size it adapted to):"]
    lines += [f"  step {curve[i][0]:>6}  {curve[i][1]:.3g}" for i in picks]
    if result.settled:
        lines.append(f"plateau: {result.plateau:.3g} (flat from step {result.plateau_from})")
    else:
        lines.append(f"plateau: not reached; d·lr was still rising at step {result.steps}, so {result.plateau:.3g} "
                     f"is a lower bound: run longer, e.g. --steps {2 * result.steps}")
    low, high = result.text_encoder_range
    if result.ended != "completed":
        lines.append("ended early: d·lr had levelled off" if result.ended == "settled" else
                     f"stopped at step {result.steps}: the suggestion comes from the curve so far")
    lines.append(f"suggested (text_encoder_lr: {low:.3g} to {high:.3g} for AdamW, a half to a tenth of unet_lr):")
    for name, keys in result.settings.items():
        lines.append(f"  {name:<10} unet_lr {keys['unet_lr']:.3g}  text_encoder_lr {keys['text_encoder_lr']:.3g}  "
                     f"lr_scheduler {keys['lr_scheduler']}")
    for name, capped in result.capped.items():
        lines.append(f"  {name}: the probe found {capped['found']:.3g}, but Danlu warns that {name} burns from "
                     f"{capped['ceiling']:.3g} with this network_alpha/network_dim: the suggestion stays below it")
    lines.append(f"saved: {result.run_dir / RESULT_FILE}")
    return "\n".join(lines)


class ProbeFailed(Exception):
    """The probe's training failed; run_training has already told the user why."""


class SettleWatch(threading.Thread):
    """Reads the probe's curve while it trains and asks it to stop (RUN/STOP, as the GUI's Stop does) once
    settled_early: a probe on a slow machine then takes the steps it needs, not its whole length."""

    def __init__(self, run_dir: Path):
        super().__init__(daemon=True, name="lr-find-settle-watch")
        self.run_dir, self.finished, self.fired = run_dir, threading.Event(), False

    def run(self) -> None:
        from trainer.run.events import STOP_FILE

        while not self.finished.wait(WATCH_S):
            if settled_early(read_curve(self.run_dir)):
                self.fired = True
                (self.run_dir / STOP_FILE).touch()
                return


def lr_find(config: TrainConfig, optimizer: str = "DAdaptAdam", steps: int | None = None,
            run_dir: Path | None = None) -> LrSuggestion:
    """Run the probe in this process (as `train` does), then read its curve and write RUN_DIR/lr_find.json."""
    from trainer.common.exit_codes import EXIT_OK
    from trainer.run.events import STOP_FILE, new_run_dir
    from trainer.training.start import run_training

    run_dir = run_dir or new_run_dir(Path(config.output_dir).expanduser())
    probe = probe_config(config, run_dir, optimizer, steps)
    watch = SettleWatch(run_dir)
    watch.start()
    try:
        code = run_training(probe, run_dir)
    finally:
        watch.finished.set()
    if code != EXIT_OK:
        raise ProbeFailed(run_dir)
    curve = read_curve(run_dir)
    if not curve:
        raise UserError(f"lr-find: the {optimizer} probe logged no adapted step size (d·lr) in {run_dir}",
                        "the optimizer did not adapt; see train.log in that folder",
                        zh=f"lr-find：{optimizer} 探测没有在 {run_dir} 记录到自适应步长（d·lr）",
                        hint_zh="优化器没有自适应；请看那个文件夹里的 train.log")
    ended = "settled" if watch.fired else "stopped" if (run_dir / STOP_FILE).exists() else "completed"
    result = suggest(config, curve, optimizer, run_dir, ended)
    (run_dir / RESULT_FILE).write_text(json.dumps(result.to_json(), indent=1), encoding="utf-8")
    return result
