"""Settings that are valid but suspicious together: the one place Danlu's advice lives, in English and Chinese.

`check` and the training log print the English texts as warnings; the GUI shows each advice next to its first
key in the user's language. Each check is one small function over a Context; config_advice runs them in order.
Torch-free: the GUI calls this on every edit (gpu_facts imports torch only when asked).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from trainer.adapters.types import NETWORK_TYPES
from trainer.checks.lr_curve import group_lrs
from trainer.config import TrainConfig
from trainer.families.table import FAMILIES


@dataclass(frozen=True)
class Advice:
    keys: tuple[str, ...]  # the config keys concerned; the GUI shows the advice at keys[0]
    code: str  # stable id, e.g. "alpha_above_dim"
    en: str  # one line: what is odd, why, what to do (names the keys)
    zh: str  # the same for a Chinese hobbyist

    def text(self, lang: str) -> str:
        return self.zh if lang.startswith("zh") else self.en


@dataclass(frozen=True)
class Context:
    config: TrainConfig
    family: str  # sd1, sd2, sdxl, flux, or auto when not known yet
    cuda: bool | None  # None: unknown, the checks that need it stay quiet
    bf16_supported: bool | None
    lrs: dict[str, float]  # group name -> starting LR, denoiser first (lr_curve.group_lrs)


def gpu_facts() -> tuple[bool, bool]:
    """(CUDA available, bf16 supported natively) on this machine; imports torch. Emulated bf16 (pre-Ampere
    GPUs) counts as unsupported: it runs, but slowly."""
    import torch

    cuda = torch.cuda.is_available()
    return cuda, cuda and torch.cuda.is_bf16_supported(including_emulation=False)


def gpu_list() -> list[dict[str, Any]]:
    """This machine's CUDA GPUs: [{"index", "name", "gib"}], empty without CUDA (the GUI's launch line). Imports
    torch."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [{"index": index, "name": torch.cuda.get_device_name(index),
             "gib": round(torch.cuda.get_device_properties(index).total_memory / 2**30, 1)}
            for index in range(torch.cuda.device_count())]


def gpu_memory_gib() -> float | None:
    """The total memory of this machine's first GPU in GiB (what the memory estimate is compared with); None
    without CUDA. Imports torch."""
    import torch

    return torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else None


def config_advice(config: TrainConfig, family: str | None = None, cuda: bool | None = None,
                  bf16_supported: bool | None = None) -> list[Advice]:
    """Every advice for this config, in a stable order. family: the resolved model family when known."""
    context = Context(config, family or config.model_family, cuda, bf16_supported,
                      group_lrs(config, family))
    return [advice for check in CHECKS for advice in check(context)]


# --- network shape -----------------------------------------------------------------------------------------
def _alpha_above_dim(c: Context) -> Iterator[Advice]:
    alpha, dim = c.config.network_alpha, c.config.network_dim
    if alpha > dim:
        yield Advice(
            ("network_alpha", "network_dim"), "alpha_above_dim",
            f"network_alpha {alpha:g} is above network_dim {dim}: the LoRA is scaled up by alpha/dim = "
            f"{alpha / dim:.2g} while training, which acts like a higher learning rate and tends to overcook the "
            "images; use network_alpha equal to network_dim or lower (half is common)",
            f"network_alpha（{alpha:g}）大于 network_dim（{dim}）：训练时 LoRA 会被放大 alpha/dim = {alpha / dim:.2g} "
            "倍，相当于调高了学习率，容易练过头、出图崩坏；network_alpha 建议等于 network_dim 或更小（常用一半）。")


def _conv_alpha_above_conv_dim(c: Context) -> Iterator[Advice]:
    config = c.config
    explicit = config.conv_dim is not None or config.conv_alpha is not None  # else _alpha_above_dim covers it
    alpha, dim = config.conv_alpha_value, config.conv_dim_value
    if NETWORK_TYPES[config.network_type].convs and explicit and alpha > dim:
        empty = " (conv_alpha is empty, so network_alpha)" if config.conv_alpha is None else ""
        empty_zh = "（conv_alpha 留空，取 network_alpha）" if config.conv_alpha is None else ""
        yield Advice(
            ("conv_alpha", "conv_dim"), "conv_alpha_above_conv_dim",
            f"conv_alpha {alpha:g}{empty} is above conv_dim {dim}: the conv layers are scaled up by "
            f"{alpha / dim:.2g} while training and learn too hard; set conv_alpha to conv_dim or lower",
            f"conv_alpha（{alpha:g}）{empty_zh}大于 conv_dim（{dim}）：训练时卷积层会被放大 {alpha / dim:.2g} 倍，"
            "学得过猛；把 conv_alpha 设为等于 conv_dim 或更小。")


# --- learning rates ----------------------------------------------------------------------------------------
def _lr_key(config: TrainConfig, group: str) -> str:
    """The key that sets a group's learning rate: its own, or learning_rate when that one is empty."""
    own = "text_encoder_lr" if group.startswith("text_encoder") else "unet_lr"
    return own if getattr(config, own) is not None else "learning_rate"


def _follows_lrs(config: TrainConfig) -> bool:
    """The configured rates are the real ones: not adapted (D-Adaptation, Prodigy) nor replaced (AdaFactor)."""
    spec = config.optimizer_spec
    return not (spec and spec.adaptive) and not config.adafactor_relative_step


def _text_encoder_above_unet(c: Context) -> Iterator[Advice]:
    names = list(c.lrs)
    if not _follows_lrs(c.config) or not names or names[0].startswith("text_encoder"):
        return
    unet = c.lrs[names[0]]
    faster = [lr for name, lr in c.lrs.items() if name.startswith("text_encoder") and lr > unet]
    if faster:
        te, unet_key, empty = max(faster), _lr_key(c.config, names[0]), c.config.text_encoder_lr is None
        yield Advice(
            ("text_encoder_lr", unet_key), "text_encoder_lr_above_unet_lr",
            f"text_encoder_lr {te:g}{' (empty, so learning_rate)' if empty else ''} is above {unet_key} {unet:g}: "
            "the text encoder overfits fastest, and prompts then stop steering the image; use a half to a tenth "
            "of the UNet's rate",
            f"文本编码器学习率 {te:g}{'（text_encoder_lr 留空，取 learning_rate）' if empty else ''}高于 {unet_key}"
            f"（{unet:g}）：文本编码器最容易过拟合，练过头后提示词就不太管用了；一般取 UNet 学习率的 1/2 到 1/10。")


# Plain Adam(W) and Lion by class name (names in OPTIMIZERS or class paths such as torch.optim.Adam): the rate
# above which LoRA training usually burns, and the usual rate to suggest. Lion wants about a third of Adam's.
_HIGH_LR = (
    (re.compile(r"^(paged)?adamw?(8bit|32bit)?$", re.IGNORECASE), 1e-3, "1e-4"),
    (re.compile(r"^(paged)?lion(8bit)?$", re.IGNORECASE), 3e-4, "3e-5"),
)


def high_lr_ceiling(config: TrainConfig, optimizer_type: str | None = None) -> float | None:
    """The rate of the first trained part from which high_lr warns for this config trained with optimizer_type
    (the config's own when None), or None where that advice never speaks. The LR finder suggests below it."""
    rule = _high_lr_rule(optimizer_type or config.optimizer_type)
    if rule is None or NETWORK_TYPES[config.network_type].own_lr_habits or not config.train_unet:
        return None
    return rule[0] * config.network_dim / config.network_alpha  # alpha/dim scales what Adam's and Lion's steps do


def _high_lr_rule(optimizer_type: str) -> tuple[float, str] | None:
    """(limit, usual) of _HIGH_LR for an optimizer name or class path."""
    name = optimizer_type.rpartition(".")[2]
    return next(((limit, usual) for pattern, limit, usual in _HIGH_LR if pattern.match(name)), None)


def _high_lr(c: Context) -> Iterator[Advice]:
    config, names = c.config, list(c.lrs)
    ceiling = high_lr_ceiling(config)
    if ceiling is None or not names or c.lrs[names[0]] < ceiling:
        return
    lr, (limit, usual) = c.lrs[names[0]], _high_lr_rule(config.optimizer_type)
    scale = config.network_alpha / config.network_dim
    key = _lr_key(config, names[0])
    yield Advice(
        (key, "optimizer_type"), "high_lr",
        f"{key} {lr:g} is high for {config.optimizer_type}: with network_alpha/network_dim "
        f"{config.network_alpha:g}/{config.network_dim} the LoRA learns at about {lr * scale:.2g}, and "
        f"above {limit:g} images tend to burn (oversaturated, noisy, NaN); around {usual} is usual",
        f"{key}（{lr:g}）对 {config.optimizer_type} 来说偏高：按 network_alpha/network_dim "
        f"{config.network_alpha:g}/{config.network_dim} 折算，实际学习率约 {lr * scale:.2g}，超过 "
        f"{limit:g} 很容易把图练糊、过饱和甚至炸炉；常用值在 {usual} 左右。")


def _adaptive_lrs(c: Context) -> Iterator[Advice]:
    """sd-scripts' advice for D-Adaptation/Prodigy: the rates are multipliers of the step they find."""
    spec, name, lrs = c.config.optimizer_spec, c.config.optimizer_type, list(c.lrs.values())
    if not (spec and spec.adaptive and lrs):
        return
    if lrs[0] != 1:
        key, low = _lr_key(c.config, next(iter(c.lrs))), lrs[0] < 1
        effect_zh = "小于 1 会把它找到的步长打折扣，学得偏慢" if low else "大于 1 会把步长放大，容易炸炉"
        yield Advice(
            (key, "optimizer_type"), "adaptive_lr_not_1",
            f"optimizer_type {name}: learning rate {lrs[0]:g} is {'low' if low else 'high'}; D-Adaptation and "
            f"Prodigy multiply the step size they find by it, so set {key} around 1.0",
            f"优化器 {name} 会自己寻找步长，学习率（{key} = {lrs[0]:g}）只是乘在上面的倍率，"
            f"{effect_zh}；把 {key} 设为 1.0 左右。")
    if len(set(lrs)) > 1:
        rates = ", ".join(f"{lr:g}" for lr in dict.fromkeys(lrs))
        yield Advice(
            ("text_encoder_lr", "unet_lr", "optimizer_type"), "adaptive_lrs_differ",
            f"optimizer_type {name}: unet_lr and text_encoder_lr differ ({rates}) but D-Adaptation and Prodigy "
            "adapt one step size for all parts; sd-scripts notes only the first takes effect: give both the same "
            "value",
            f"优化器 {name}：unet_lr 与 text_encoder_lr 不同（{rates}），但 D-Adaptation / Prodigy 对所有部分只估计"
            "一个步长，sd-scripts 也提示只有第一个生效；两者请填相同的值（通常都是 1.0）。")


# --- AdaFactor and paged optimizers ------------------------------------------------------------------------
def _adafactor_relative_step(c: Context) -> Iterator[Advice]:
    config, name = c.config, c.config.optimizer_type
    if not config.adafactor_relative_step:
        return
    yield Advice(
        ("learning_rate", "optimizer_type"), "adafactor_relative_lr",
        f"optimizer_type {name}: the relative step sets the learning rate; learning_rate "
        f"{config.learning_rate:g} is only the value shown before the first step",
        f"优化器 {name} 使用相对步长，学习率由它自己计算；learning_rate（{config.learning_rate:g}）只是第一步之前"
        "显示的数值。")
    if config.unet_lr is not None or config.text_encoder_lr is not None:
        yield Advice(
            ("unet_lr", "text_encoder_lr"), "adafactor_relative_part_lrs",
            f"optimizer_type {name}: unet_lr and text_encoder_lr are ignored with AdaFactor's relative step",
            f"优化器 {name} 使用相对步长时，unet_lr 和 text_encoder_lr 不起作用，可以留空。")
    if config.lr_scheduler != "adafactor" and not config.lr_scheduler_type:
        yield Advice(
            ("lr_scheduler",), "adafactor_relative_scheduler",
            f"lr_scheduler: AdaFactor's relative step uses the adafactor schedule, not {config.lr_scheduler}",
            f"lr_scheduler：AdaFactor 的相对步长使用它自己的 adafactor 调度，{config.lr_scheduler} 不会生效。")


def _adafactor_fixed_lr(c: Context) -> Iterator[Advice]:
    config = c.config
    if config.optimizer_type != "AdaFactor" or config.adafactor_relative_step:
        return
    if config.max_grad_norm != 0:
        yield Advice(("max_grad_norm",), "adafactor_max_grad_norm",
                     "max_grad_norm: AdaFactor clips its updates itself; consider max_grad_norm 0",
                     "max_grad_norm：AdaFactor 自己会裁剪更新幅度，可以把 max_grad_norm 设为 0。")
    if config.lr_scheduler != "constant_with_warmup":
        yield Advice(("lr_scheduler",), "adafactor_scheduler",
                     "lr_scheduler: constant_with_warmup usually suits AdaFactor with a fixed learning rate",
                     "lr_scheduler：固定学习率的 AdaFactor 一般搭配 constant_with_warmup。")
    if config.optimizer_kwargs.get("clip_threshold", 1.0) != 1.0:
        yield Advice(("optimizer_args",), "adafactor_clip_threshold",
                     "optimizer_args: clip_threshold=1.0 usually suits AdaFactor",
                     "optimizer_args：AdaFactor 一般用 clip_threshold=1.0。")


def _paged_without_cuda(c: Context) -> Iterator[Advice]:
    name = c.config.optimizer_type
    if name.startswith("Paged") and c.cuda is False:
        yield Advice(("optimizer_type",), "paged_without_cuda",
                     f"optimizer_type {name}: paging needs CUDA; on this machine it runs unpaged",
                     f"优化器 {name} 的分页（paged）功能需要 CUDA（N 卡），这台机器上会按不分页的方式运行。")


# --- precision ---------------------------------------------------------------------------------------------
def _fp16_overflows(c: Context) -> Iterator[Advice]:
    family = FAMILIES.get(c.family)
    if family and family.fp16_overflows and c.config.mixed_precision == "fp16":
        yield Advice(("mixed_precision",), "fp16_with_flux",
                     f"mixed_precision: {family.label} was made in bf16 and its activations overflow fp16, so the "
                     "loss turns NaN and samples come out black; use bf16 (RTX 30xx and newer)",
                     f"mixed_precision：{family.label} 本身是 bf16 模型，fp16 装不下它的数值范围，loss 会变成 NaN、"
                     "样图全黑（炸炉）；请用 bf16（RTX 30 系及更新的显卡）。")


def _bf16_unsupported(c: Context) -> Iterator[Advice]:
    if c.config.mixed_precision == "bf16" and c.cuda and c.bf16_supported is False:
        yield Advice(("mixed_precision",), "bf16_unsupported",
                     "mixed_precision: this GPU has no native bf16 (it came with RTX 30xx / A100), so bf16 runs "
                     "slowly or fails; use fp16",
                     "mixed_precision：这张显卡没有原生 bf16 支持（RTX 30 系 / A100 起才有），用 bf16 会很慢甚至出错；"
                     "请改用 fp16。")



# --- memory ------------------------------------------------------------------------------------------------
def _fp8_without_checkpointing(c: Context) -> Iterator[Advice]:
    if c.config.fp8_denoiser and not c.config.gradient_checkpointing:
        key = "fp8_base" if c.config.fp8_base else "fp8_base_unet"
        yield Advice((key, "gradient_checkpointing"), "fp8_without_checkpointing",
                     f"{key} halves the frozen weights, but without gradient_checkpointing the activations "
                     "kept for the backward pass take most of the memory, so it saves little; turn on "
                     "gradient_checkpointing too",
                     f"{key} 只把冻结的底模权重减半；不开 gradient_checkpointing 时，反向传播要保存的激活值才是显存"
                     "大头，省不了多少显存。请同时打开 gradient_checkpointing。")


CHECKS: tuple[Callable[[Context], Iterator[Advice]], ...] = (
    _alpha_above_dim, _conv_alpha_above_conv_dim, _text_encoder_above_unet, _high_lr, _adaptive_lrs,
    _adafactor_relative_step, _adafactor_fixed_lr, _paged_without_cuda, _fp16_overflows, _bf16_unsupported,
    _fp8_without_checkpointing,
)
