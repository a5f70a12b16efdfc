"""Model effect tab: learning rates, optimizer and schedule."""

from __future__ import annotations

from typing import Literal

from .base import SchemaPart, field


class OptimizerFields(SchemaPart):
    learning_rate: float = field(
        1e-4, "effect", "learning_rate", "Base learning rate, used where unet_lr or text_encoder_lr is empty.",
        "基础学习率，unet_lr 或 text_encoder_lr 留空时使用它。", gt=0, le=10)
    unet_lr: float | None = field(
        None, "effect", "learning_rate",
        "UNet learning rate: 1e-4 is typical with AdamW. Too high burns the images (oversaturated, noisy); too "
        "low learns nothing.",
        "UNet 学习率：AdamW 常用 1e-4。太高会把图练糊、过饱和甚至炸炉，太低则学不到东西。", gt=0, le=10)
    text_encoder_lr: float | None = field(
        None, "effect", "learning_rate",
        "Text-encoder learning rate, usually a half to a tenth of unet_lr; too high makes prompts stop working.",
        "文本编码器学习率，通常是 unet_lr 的 1/2 到 1/10；太高会让提示词失去控制力。", gt=0, le=10)
    optimizer_type: Literal["AdamW"] = field("AdamW", "effect", "optimizer", "Optimizer.", "优化器。")
    lr_scheduler: Literal["constant", "cosine"] = field(
        "cosine", "effect", "optimizer",
        "How the learning rate changes over the run: constant, or cosine decay to zero.",
        "学习率随训练的变化方式：constant 恒定，cosine 余弦衰减到 0。")
    lr_warmup_steps: int = field(
        0, "effect", "optimizer", "Steps over which the learning rate rises from 0 at the start.",
        "预热步数：开始时学习率从 0 逐渐升到设定值。", ge=0)
    max_grad_norm: float = field(
        1.0, "effect", "optimizer", "Clip the gradient norm to this value (0 = no clipping).",
        "梯度裁剪的最大范数（0 表示不裁剪）。", advanced=True, ge=0)
