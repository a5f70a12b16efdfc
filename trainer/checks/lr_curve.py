"""The learning rate of each trained part over the planned steps, as the real scheduler will set it.

group_lrs is torch-free (the GUI's advice uses it on every edit); lr_curve imports torch and the scheduler code
when it is called, so the GUI asks it of its worker process (trainer/checks/service.py).
"""

from __future__ import annotations

from trainer.config import TrainConfig
from trainer.families.table import FAMILIES


def group_lrs(config: TrainConfig, family: str | None = None) -> dict[str, float]:
    """The starting learning rate of each optimizer group the training builds, by the group name its events
    log (the denoiser first: "unet", Flux's "transformer"; then "text_encoder", "text_encoder_2").

    family: the resolved model family when known; it decides how many text encoders train and whether the
    text encoder trains at all (Flux's default), else config.model_family (which may be "auto").
    """
    family = family or config.model_family
    if family != config.model_family:
        config = config.model_copy(update={"model_family": family})  # train_text_encoder follows the family
    spec, lrs = FAMILIES.get(family), {}
    if config.train_unet:
        lrs[spec.denoiser if spec else "unet"] = config.effective_unet_lr
    if config.train_text_encoder:
        rates = config.text_encoder_lrs(_text_encoders(config, family))
        names = ["text_encoder"] + [f"text_encoder_{index}" for index in range(2, len(rates) + 1)]
        lrs.update(zip(names, rates))
    return lrs


def _text_encoders(config: TrainConfig, family: str) -> int:
    """How many text encoders get a LoRA: the family's, less those whose opt_in flag is off (Flux's T5 trains
    only with train_t5xxl); with the family not known yet, one per text_encoder_lr."""
    spec = FAMILIES.get(family)
    if spec is None:
        return len(config.text_encoder_lr) if isinstance(config.text_encoder_lr, list) else 1
    return len(config.trained_text_encoders(family))  # called when the text encoder trains


def lr_curve(config: TrainConfig, total_steps: int, max_points: int = 200,
             family: str | None = None) -> dict[str, list[tuple[int, float]]]:
    """group name -> [(step, lr)]: the LR each optimizer step 1..total_steps uses, from the scheduler the
    training builds (optim.make_scheduler) stepped on a dummy optimizer.

    At most max_points steps per group, evenly spread, always with the first and the last. AdaFactor's
    relative step gives {}: its learning rate follows the gradients, so there is no curve to draw in advance; so
    does a scheduler class path whose module is not loaded (importing it would run the config author's code).
    A scheduler the config names wrongly raises the ConfigError the training would raise.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, not {total_steps}")
    if config.adafactor_relative_step:
        return {}
    import torch  # lazily: the GUI's advice imports this module for group_lrs

    from trainer.training.optim import loaded, make_scheduler

    if "lr_scheduler_type" in config.class_paths and not loaded(config.lr_scheduler_type):
        return {}

    lrs = group_lrs(config, family)
    optimizer = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in lrs.values()],
                                lr=config.learning_rate)
    scheduler = make_scheduler(config, optimizer, total_steps)
    wanted = sampled_steps(total_steps, max_points)
    curve: dict[str, list[tuple[int, float]]] = {name: [] for name in lrs}
    for step in range(1, total_steps + 1):
        if step in wanted:  # the LR this step's optimizer.step() uses: set by the previous scheduler.step()
            for name, group in zip(lrs, optimizer.param_groups):
                curve[name].append((step, float(group["lr"])))
        optimizer.step()  # no gradients, so nothing changes; keeps torch's step-order check quiet
        scheduler.step()
    return curve


def sampled_steps(total_steps: int, max_points: int) -> set[int]:
    """At most max_points (at least 2) of the steps 1..total_steps, evenly spread, first and last included."""
    points = max(2, max_points)
    if total_steps <= points:
        return set(range(1, total_steps + 1))
    return {1 + round(index * (total_steps - 1) / (points - 1)) for index in range(points)}
