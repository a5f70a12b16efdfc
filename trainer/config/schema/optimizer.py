"""Model effect tab: learning rates, optimizer and schedule.

OPTIMIZERS is the one list of optimizer names (sd-scripts' spellings, matched case-insensitively as sd-scripts
does); trainer.training.optim imports the classes from it. The schema stays free of torch: it only names them.
"""

from __future__ import annotations

import ast
import difflib
import re
from typing import Any, Literal, NamedTuple

from pydantic import field_validator, model_validator

from trainer.common.errors import RuleError
from trainer.config.schema.base import SchemaPart, field


class OptimizerSpec(NamedTuple):
    path: str                     # importable "module.Class"
    package: str                  # the pip package that provides it
    fixed: dict[str, Any] = {}    # always passed, as sd-scripts does (not part of ss_optimizer's args)
    defaults: dict[str, Any] = {}  # added to optimizer_args when missing (sd-scripts lists them in ss_optimizer)
    adaptive: bool = False        # D-Adaptation/Prodigy: the step is d·lr, d estimated while training
    state_bytes: float = 8.0      # its state per trained parameter (trainer/checks/memory.py): AdamW's two fp32;
    # 8-bit states take 1 byte each, D-Adaptation/Prodigy keep an fp32 s (and Prodigy the start, SGD and AdaGrad
    # x0), AdaFactor a factored second moment (rows + columns: next to nothing for a LoRA's narrow matrices).


_BNB = "bitsandbytes"
_NESTEROV = {"fixed": {"nesterov": True}, "defaults": {"momentum": 0.9}}
OPTIMIZERS: dict[str, OptimizerSpec] = {
    "AdamW": OptimizerSpec("torch.optim.AdamW", "torch"),
    "AdamW8bit": OptimizerSpec("bitsandbytes.optim.AdamW8bit", _BNB, state_bytes=2),
    "PagedAdamW": OptimizerSpec("bitsandbytes.optim.PagedAdamW", _BNB),
    "PagedAdamW8bit": OptimizerSpec("bitsandbytes.optim.PagedAdamW8bit", _BNB, state_bytes=2),
    "PagedAdamW32bit": OptimizerSpec("bitsandbytes.optim.PagedAdamW32bit", _BNB),
    "Lion": OptimizerSpec("lion_pytorch.Lion", "lion-pytorch", state_bytes=4),
    "Lion8bit": OptimizerSpec("bitsandbytes.optim.Lion8bit", _BNB, state_bytes=1),
    "PagedLion8bit": OptimizerSpec("bitsandbytes.optim.PagedLion8bit", _BNB, state_bytes=1),
    "SGDNesterov": OptimizerSpec("torch.optim.SGD", "torch", **_NESTEROV, state_bytes=4),
    "SGDNesterov8bit": OptimizerSpec("bitsandbytes.optim.SGD8bit", _BNB, **_NESTEROV, state_bytes=1),
    # sd-scripts maps the plain name to the preprint variant of D-Adaptation's Adam.
    "DAdaptation": OptimizerSpec("dadaptation.experimental.DAdaptAdamPreprint", "dadaptation", adaptive=True,
                                 state_bytes=12),
    "DAdaptAdamPreprint": OptimizerSpec("dadaptation.experimental.DAdaptAdamPreprint", "dadaptation",
                                        adaptive=True, state_bytes=12),
    "DAdaptAdam": OptimizerSpec("dadaptation.DAdaptAdam", "dadaptation", adaptive=True, state_bytes=12),
    "DAdaptAdaGrad": OptimizerSpec("dadaptation.DAdaptAdaGrad", "dadaptation", adaptive=True, state_bytes=12),
    "DAdaptAdan": OptimizerSpec("dadaptation.DAdaptAdan", "dadaptation", adaptive=True, state_bytes=20),
    "DAdaptAdanIP": OptimizerSpec("dadaptation.experimental.DAdaptAdanIP", "dadaptation", adaptive=True,
                                  state_bytes=20),
    "DAdaptLion": OptimizerSpec("dadaptation.DAdaptLion", "dadaptation", adaptive=True, state_bytes=8),
    "DAdaptSGD": OptimizerSpec("dadaptation.DAdaptSGD", "dadaptation", adaptive=True, state_bytes=12),
    "Prodigy": OptimizerSpec("prodigyopt.Prodigy", "prodigyopt", adaptive=True, state_bytes=16),
    "AdaFactor": OptimizerSpec("transformers.optimization.Adafactor", "transformers",
                               defaults={"relative_step": True}, state_bytes=0.5),
}
_BY_LOWER = {name.lower(): name for name in OPTIMIZERS}
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial",
              "adafactor")
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def parse_key_values(entries: list[str]) -> dict[str, Any]:
    """sd-scripts' optimizer_args / lr_scheduler_args: 'key=value' with the value a Python literal."""
    parsed = {}
    for entry in entries:
        key, sep, text = entry.partition("=")
        if not sep or not key.strip().isidentifier():
            raise RuleError(f"entry {entry!r} is not key=value, e.g. weight_decay=0.01",
                            zh=f"{entry!r} 不是 参数=值 的形式，例如 weight_decay=0.01")
        try:
            parsed[key.strip()] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            raise RuleError(f"entry {entry!r}: {text.strip()!r} is not a number, True/False, a tuple like "
                            "(0.9,0.99) or a quoted string",
                            zh=f"{entry!r}：{text.strip()!r} 不是数字、True/False、(0.9,0.99) 这样的元组或带引号的"
                            "字符串") from None
    return parsed


def _as_entries(value: Any) -> Any:
    """A list, or one string of space-separated entries as the kohya_ss GUI writes them."""
    if value is None:
        return []
    return value.split() if isinstance(value, str) else value


class OptimizerFields(SchemaPart):
    learning_rate: float = field(
        1e-4, "effect", "learning_rate",
        "Base learning rate, used where unet_lr or text_encoder_lr is empty. With DAdaptation/Prodigy it is a "
        "multiplier of the step they find themselves: use 1.0.",
        "基础学习率，unet_lr 或 text_encoder_lr 留空时使用它。DAdaptation/Prodigy 会自己找步长，此时它只是倍率，"
        "填 1.0。", gt=0, le=10)
    unet_lr: float | None = field(
        None, "effect", "learning_rate",
        "UNet learning rate: 1e-4 is typical with AdamW. Too high burns the images (oversaturated, noisy); too "
        "low learns nothing.",
        "UNet 学习率：AdamW 常用 1e-4。太高会把图练糊、过饱和甚至炸炉，太低则学不到东西。", gt=0, le=10)
    text_encoder_lr: float | list[float] | None = field(
        None, "effect", "learning_rate",
        "Text-encoder learning rate, usually a half to a tenth of unet_lr; too high makes prompts stop working. "
        "SDXL has two text encoders: one value for both, or a list of two [CLIP-L, OpenCLIP-G] as sd-scripts.",
        "文本编码器学习率，通常是 unet_lr 的 1/2 到 1/10；太高会让提示词失去控制力。SDXL 有两个文本编码器："
        "填一个值两者共用，或填两个值的列表 [CLIP-L, OpenCLIP-G]（与 sd-scripts 相同）。")
    optimizer_type: Literal[tuple(OPTIMIZERS)] | str = field(
        "AdamW", "effect", "optimizer",
        "How the weights are updated. AdamW8bit: AdamW with less memory, the usual choice. Lion: needs about a "
        "third of AdamW's learning rate. DAdaptation/Prodigy: find the learning rate themselves (set the "
        "learning rates to 1.0 and read the found value off the lr_effective curve). AdaFactor: least memory. "
        "Any other optimizer: its class path, e.g. torch.optim.RAdam.",
        "权重的更新方式。AdamW8bit：省显存的 AdamW，最常用。Lion：学习率约取 AdamW 的三分之一。"
        "DAdaptation/Prodigy：自适应，自己寻找学习率（学习率都填 1.0，训练中从 lr_effective 曲线读出它找到的值）。"
        "AdaFactor：最省显存。其他优化器可填类路径，如 torch.optim.RAdam。")
    optimizer_args: list[str] = field(
        [], "effect", "optimizer",
        "Extra optimizer settings as key=value, e.g. weight_decay=0.01, betas=(0.9,0.99), d_coef=0.8 or "
        "decouple=True; values are numbers, True/False, tuples or quoted strings.",
        "优化器的额外参数，写成 key=value，如 weight_decay=0.01、betas=(0.9,0.99)、d_coef=0.8、decouple=True；"
        "值可以是数字、True/False、元组或带引号的字符串。", advanced=True, metadata=False)
    lr_scheduler: Literal[SCHEDULERS] = field(
        "cosine", "effect", "optimizer",
        "How the learning rate changes over the run: constant; constant_with_warmup; linear or cosine decay to "
        "zero; cosine_with_restarts (lr_scheduler_num_cycles cosine decays, jumping back up in between); polynomial "
        "(lr_scheduler_power sets the curve); adafactor (AdaFactor's own relative step, only with that "
        "optimizer).",
        "学习率在训练中的变化方式：constant 恒定；constant_with_warmup 预热后恒定；linear / cosine 线性或余弦衰减到 0；"
        "cosine_with_restarts 做 lr_scheduler_num_cycles 轮余弦衰减，每轮结束跳回初始值；polynomial 多项式衰减（曲线由 "
        "lr_scheduler_power 决定）；adafactor 使用 AdaFactor 自带的相对步长，只能配 AdaFactor 优化器。")
    lr_warmup_steps: int | float = field(
        0, "effect", "optimizer",
        "Steps over which the learning rate rises from 0 at the start; below 1 it is a fraction of the total "
        "steps (0.05 = the first 5%). Helps a high learning rate start calmly.",
        "预热步数：开始时学习率从 0 逐渐升到设定值；小于 1 时表示占总步数的比例（0.05 即前 5%）。"
        "注意 kohya_ss 界面里的 LR warmup 是百分比，这里是步数或比例。", ge=0)
    lr_scheduler_num_cycles: int = field(
        1, "effect", "optimizer",
        "cosine_with_restarts: the number of cosine cycles; the learning rate falls to zero this many times and "
        "jumps back up in between.", "cosine_with_restarts 专用：余弦周期数，学习率降到 0 的次数，中间每次跳回初始值。", advanced=True, ge=1)
    lr_scheduler_power: float = field(
        1.0, "effect", "optimizer",
        "polynomial: the decay curve's power; 1 is a straight line, above 1 falls fast early, below 1 late.",
        "polynomial 专用：衰减曲线的幂次；1 为直线，大于 1 前期降得快，小于 1 后期降得快。", advanced=True, gt=0)
    lr_scheduler_type: str = field(
        "", "effect", "optimizer",
        "A scheduler class instead of lr_scheduler, e.g. torch.optim.lr_scheduler.StepLR (a bare name is "
        "looked up in torch.optim.lr_scheduler); its settings go in lr_scheduler_args.",
        "用一个调度器类代替 lr_scheduler，如 torch.optim.lr_scheduler.StepLR（只写类名时在 "
        "torch.optim.lr_scheduler 中查找）；其参数写在 lr_scheduler_args。", advanced=True)
    lr_scheduler_args: list[str] = field(
        [], "effect", "optimizer",
        "Extra scheduler settings as key=value, e.g. lr_end=1e-6 for polynomial, or step_size=100 gamma=0.5 "
        "for StepLR.", "调度器的额外参数，写成 key=value，如 polynomial 的 lr_end=1e-6，或 StepLR 的 "
        "step_size=100 gamma=0.5。", advanced=True)
    max_grad_norm: float = field(
        1.0, "effect", "optimizer", "Clip the gradient norm to this value (0 = no clipping).",
        "梯度裁剪的最大范数（0 表示不裁剪）。", advanced=True, ge=0)

    @field_validator("text_encoder_lr")
    @classmethod
    def _one_or_two_rates(cls, value: float | list[float] | None) -> float | list[float] | None:
        rates = value if isinstance(value, list) else [] if value is None else [value]
        if isinstance(value, list) and not 1 <= len(value) <= 2:
            raise RuleError("give one learning rate, or a list of two (SDXL: [CLIP-L, OpenCLIP-G])",
                            zh="请填一个学习率，或两个组成的列表（SDXL：[CLIP-L, OpenCLIP-G]）")
        if any(not 0 < rate <= 10 for rate in rates):
            raise RuleError("each learning rate must be above 0 and at most 10",
                            zh="每个学习率都必须大于 0、不超过 10")
        return value

    @field_validator("optimizer_type", mode="before")
    @classmethod
    def _canonical_optimizer(cls, value: Any) -> Any:
        return _BY_LOWER.get(value.lower(), value) if isinstance(value, str) else value

    @field_validator("optimizer_type")
    @classmethod
    def _known_optimizer(cls, value: str) -> str:
        if value in OPTIMIZERS or _DOTTED.match(value):
            return value
        close = difflib.get_close_matches(value.lower(), list(_BY_LOWER), n=1, cutoff=0.6)
        if close:
            raise RuleError(f"unknown optimizer; did you mean '{_BY_LOWER[close[0]]}'?",
                            zh=f"未知的优化器；是不是想写 '{_BY_LOWER[close[0]]}'？")
        raise RuleError(f"unknown optimizer; use one of {', '.join(OPTIMIZERS)}, or a class path like "
                        "torch.optim.Adam", zh=f"未知的优化器；请从 {', '.join(OPTIMIZERS)} 中选一个，或写类路径，"
                        "例如 torch.optim.Adam")

    @field_validator("optimizer_args", "lr_scheduler_args", mode="before")
    @classmethod
    def _entries(cls, value: Any) -> Any:
        return _as_entries(value)

    @field_validator("optimizer_args", "lr_scheduler_args")
    @classmethod
    def _parsable(cls, value: list[str]) -> list[str]:
        parse_key_values(value)
        return value

    @field_validator("lr_scheduler_type")
    @classmethod
    def _scheduler_path(cls, value: str) -> str:
        if value and not _NAME.match(value):
            raise RuleError("must be a class name or path like torch.optim.lr_scheduler.StepLR",
                            zh="应为类名或类路径，例如 torch.optim.lr_scheduler.StepLR")
        return value

    @model_validator(mode="after")
    def _schedule_fits_optimizer(self) -> OptimizerFields:
        warmup = self.lr_warmup_steps
        if warmup >= 1 and warmup != int(warmup):
            raise RuleError(f"lr_warmup_steps: {warmup} is neither a whole number of steps nor a fraction below 1",
                            "lr_warmup_steps", zh=f"lr_warmup_steps：{warmup} 既不是整数步数，也不是小于 1 的比例")
        relative = self.adafactor_relative_step
        if self.lr_scheduler == "adafactor" and not relative:
            why, why_zh = (("AdaFactor runs without relative_step (optimizer_args relative_step=False)",
                            "AdaFactor 没开 relative_step（optimizer_args 里 relative_step=False）")
                           if self.optimizer_type == "AdaFactor" else
                           (f"optimizer_type is {self.optimizer_type}", f"optimizer_type 是 {self.optimizer_type}"))
            raise RuleError(f"lr_scheduler: 'adafactor' follows AdaFactor's relative step size, but {why}: "
                            "choose another lr_scheduler, or optimizer_type AdaFactor with relative_step",
                            "lr_scheduler", "optimizer_type", "optimizer_args",
                            zh=f"lr_scheduler: 'adafactor' 跟随 AdaFactor 的相对步长，但{why_zh}：请换一个 "
                            "lr_scheduler，或用开启 relative_step 的 optimizer_type AdaFactor")
        if warmup and (relative or self.lr_scheduler_type):
            what, what_zh = (f"lr_scheduler_type {self.lr_scheduler_type}",) * 2 if self.lr_scheduler_type else \
                ("AdaFactor's relative step (its own warm-up is optimizer_args warmup_init=True)",
                 "AdaFactor 的相对步长（它自己的预热是 optimizer_args 里的 warmup_init=True）")
            raise RuleError(f"lr_warmup_steps: {what} takes no warm-up; set lr_warmup_steps to 0", "lr_warmup_steps",
                            "lr_scheduler_type" if self.lr_scheduler_type else "optimizer_args",
                            zh=f"lr_warmup_steps：{what_zh} 不使用预热（warm-up）；请把 lr_warmup_steps 设为 0")
        return self

    # --- Derived values ---------------------------------------------------------------------------
    @property
    def optimizer_spec(self) -> OptimizerSpec | None:
        """The named optimizer, or None for a class path."""
        return OPTIMIZERS.get(self.optimizer_type)

    @property
    def class_paths(self) -> dict[str, str]:
        """key -> the class path it names that no list of Danlu's holds: code from the config's author, imported
        by the training process only (never to check a config), after `check` and the GUI's review named it."""
        paths = {"optimizer_type": self.optimizer_type} if self.optimizer_spec is None else {}
        if "." in self.lr_scheduler_type:  # a bare name is looked up in torch.optim.lr_scheduler
            paths["lr_scheduler_type"] = self.lr_scheduler_type
        return paths

    @property
    def optimizer_kwargs(self) -> dict[str, Any]:
        """optimizer_args parsed, with the defaults sd-scripts adds (these appear in ss_optimizer)."""
        kwargs = parse_key_values(self.optimizer_args)
        for key, value in (self.optimizer_spec.defaults if self.optimizer_spec else {}).items():
            kwargs.setdefault(key, value)  # after the user's, where sd-scripts appends them
        if self.optimizer_type == "AdaFactor" and kwargs.get("warmup_init"):
            kwargs["relative_step"] = True  # sd-scripts: warmup_init only exists with the relative step
        return kwargs

    @property
    def adafactor_relative_step(self) -> bool:
        """AdaFactor computing its own step size: learning rates are then only its starting point."""
        return self.optimizer_type == "AdaFactor" and bool(self.optimizer_kwargs.get("relative_step"))

    @property
    def lr_scheduler_kwargs(self) -> dict[str, Any]:
        return parse_key_values(self.lr_scheduler_args)
