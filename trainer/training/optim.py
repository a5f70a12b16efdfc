"""Optimizers and learning-rate schedules, with sd-scripts' names and semantics (library/train_util.py).

The names come from trainer.config.schema.optimizer.OPTIMIZERS; a class path ("package.module.Class") works too.
Classes are imported only when a run builds its optimizer, so a missing package is a clear error then. A class
path's module is the config author's code: checks look it up only in modules already loaded (`loaded`), so
checking a config never runs it.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler
from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION, AdafactorSchedule, SchedulerType

from trainer.common.errors import ConfigError, Problem
from trainer.config import TrainConfig

SCHEDULER_MODULE = "torch.optim.lr_scheduler"  # where a bare lr_scheduler_type name is looked up


def optimizer_class(config: TrainConfig) -> type:
    """Import the optimizer class, or raise ConfigError naming optimizer_type and what to install."""
    spec = config.optimizer_spec
    return _import(spec.path if spec else config.optimizer_type, "optimizer_type", spec.package if spec else None)


def optimizer_problems(config: TrainConfig) -> list[Problem]:
    """For `check`: the optimizer cannot be imported on this machine. A class path (config.class_paths) is looked
    at only when its module is loaded already: importing it would run its code."""
    if "optimizer_type" in config.class_paths and not loaded(config.optimizer_type):
        return []
    try:
        optimizer_class(config)
    except ConfigError as exc:
        return exc.problems
    return []


def make_optimizer(config: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    """groups: [{"name": ..., "params": [...], "lr": ...}] - one per trained model part.

    Built as sd-scripts builds it: learning_rate as the default lr, optimizer_args as keyword arguments, plus
    the arguments sd-scripts adds (nesterov for SGDNesterov, momentum 0.9 when missing). AdaFactor with its
    relative step gets no learning rate at all (it computes its own). The sd-scripts description of the
    optimizer is kept for `optimizer_name`.
    """
    cls = optimizer_class(config)
    spec = config.optimizer_spec
    kwargs = config.optimizer_kwargs
    extra = dict(spec.fixed) if spec else {}
    groups = [dict(group) for group in groups]
    lr: float | None = config.learning_rate
    if config.adafactor_relative_step:
        lr = None  # Adafactor refuses a manual lr together with relative_step
        for group in groups:
            group.pop("lr", None)
    elif cls is torch.optim.AdamW and torch.cuda.is_available() and not {"fused", "foreach"} & set(kwargs):
        extra["fused"] = True  # torch's fused AdamW kernel is for CUDA tensors
    try:
        optimizer = cls(groups, lr=lr, **extra, **kwargs)
    except (TypeError, ValueError) as exc:
        problem = Problem(("optimizer_args",), f"{config.optimizer_type} does not accept {kwargs}: {exc}",
                          zh=f"{config.optimizer_type} 不接受 {kwargs}：{exc}")
        raise ConfigError([problem]) from None
    optimizer.danlu_args = ",".join(f"{key}={value}" for key, value in kwargs.items())
    return optimizer


def optimizer_name(optimizer: torch.optim.Optimizer) -> str:
    """As sd-scripts writes ss_optimizer: the class path, and the optimizer_args in parentheses if any."""
    cls = type(optimizer)
    args = getattr(optimizer, "danlu_args", "")
    return f"{cls.__module__}.{cls.__qualname__}" + (f"({args})" if args else "")


def warmup_steps(config: TrainConfig, total_steps: int) -> int:
    """lr_warmup_steps as steps: below 1 it is a fraction of the total (sd-scripts truncates)."""
    value = config.lr_warmup_steps
    return int(value * total_steps) if value < 1 else int(value)


def loaded(path: str, default_module: str | None = None) -> bool:
    """The module of a class path is imported in this process already: resolving the path runs no code."""
    return (path.rpartition(".")[0] or default_module) in sys.modules


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> LRScheduler:
    """sd-scripts' get_scheduler_fix; the scheduler steps once per optimizer step."""
    kwargs = config.lr_scheduler_kwargs
    key = "lr_scheduler_args" if kwargs else "lr_scheduler"
    if config.lr_scheduler_type:
        cls = _import(config.lr_scheduler_type, "lr_scheduler_type", None, default_module=SCHEDULER_MODULE)
        return _construct(cls, key, optimizer, **kwargs)
    if config.adafactor_relative_step:
        return AdafactorSchedule(optimizer, config.learning_rate)
    name, warmup = config.lr_scheduler, warmup_steps(config, total_steps)
    if name == "constant" and warmup:
        name = "constant_with_warmup"  # the plain constant schedule would ignore the warmup
    schedule = TYPE_TO_SCHEDULER_FUNCTION[SchedulerType(name)]
    if name != "constant":
        kwargs["num_warmup_steps"] = warmup
    if name not in ("constant", "constant_with_warmup"):
        kwargs["num_training_steps"] = total_steps
    if name == "cosine_with_restarts":
        kwargs["num_cycles"] = config.lr_scheduler_num_cycles
    if name == "polynomial":
        kwargs["power"] = config.lr_scheduler_power
    return _construct(schedule, key, optimizer, **kwargs)


def step_lrs(optimizer: torch.optim.Optimizer, names: list[str]) -> tuple[dict[str, float], dict[str, float] | None]:
    """Per parameter group: the learning rate the step just taken used, and for D-Adaptation/Prodigy d·lr.

    Call after optimizer.step() and before the scheduler steps. AdaFactor's relative step is computed from
    the optimizer state (its group lr is only a placeholder). The second value (`lr_effective` in events) is
    a dict group name -> d·lr, with d as the optimizer holds it after the step (what sd-scripts logs as
    lr/d*lr), or None for optimizers that do not adapt d.
    """
    lrs = {name: _used_lr(optimizer, group) for name, group in zip(names, optimizer.param_groups)}
    if not all("d" in group for group in optimizer.param_groups):
        return lrs, None
    # float(): some keep d as a 0-d tensor (DAdaptAdanIP)
    return lrs, {name: float(group["d"]) * lrs[name] for name, group in zip(names, optimizer.param_groups)}


def _used_lr(optimizer: torch.optim.Optimizer, group: dict) -> float:
    state = optimizer.state.get(group["params"][0], {})
    if group.get("relative_step") and hasattr(optimizer, "_get_lr") and "step" in state:
        return float(optimizer._get_lr(group, state))
    return float(group["lr"])


def _import(path: str, key: str, package: str | None, default_module: str | None = None) -> type:
    module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name or default_module), attr)
    except (ImportError, RuntimeError, OSError) as exc:  # a package can fail to load on this machine
        hint = f"install it: pip install {package}" if package else "check the spelling and that it is installed"
        hint_zh = f"请安装：pip install {package}" if package else "请检查拼写，并确认已安装"
        raise ConfigError([Problem((key,), f"{path} cannot be imported ({exc})", hint,
                                   zh=f"无法导入 {path}（{exc}）", hint_zh=hint_zh)]) from None
    except AttributeError:
        problem = Problem((key,), f"{module_name or default_module} has no {attr}", "check the spelling",
                          zh=f"{module_name or default_module} 里没有 {attr}", hint_zh="请检查拼写")
        raise ConfigError([problem]) from None


def _construct(factory: Any, key: str, optimizer: torch.optim.Optimizer, **kwargs: Any) -> LRScheduler:
    try:
        return factory(optimizer, **kwargs)
    except (TypeError, ValueError) as exc:
        problem = Problem((key,), f"{getattr(factory, '__name__', factory)} rejected {kwargs}: {exc}",
                          zh=f"{getattr(factory, '__name__', factory)} 不接受 {kwargs}：{exc}")
        raise ConfigError([problem]) from None
