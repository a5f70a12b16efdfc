"""Model effect tab, network group: the LoRA's shape and which model parts it trains."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from .base import SchemaPart, field


class NetworkFields(SchemaPart):
    network_module: Literal["networks.lora", "networks.lora_flux"] = field(
        "networks.lora", "effect", "network",
        "Network type (sd-scripts module name). networks.lora: LoRA on the attention and feed-forward layers; "
        "networks.lora_flux: sd-scripts' name for the same on Flux.1 (either works for Flux).",
        "网络类型（sd-scripts 的模块名）。networks.lora：作用于注意力层和前馈层的 LoRA；networks.lora_flux："
        "sd-scripts 对 Flux.1 的同一种 LoRA 的叫法（训练 Flux 时两者皆可）。", advanced=True)
    network_dim: int = field(
        32, "effect", "network",
        "LoRA rank. Higher keeps more detail but also more noise, and the file grows; 8-32 for a character, "
        "32-128 for a style.",
        "LoRA 的秩（维度）。越大能记住的细节越多，但也更容易学到无关内容，文件也更大；角色常用 8-32，画风 32-128。",
        ge=1, le=1024)
    network_alpha: float = field(
        32.0, "effect", "network",
        "Scales the LoRA by alpha/dim while training. Equal to dim: no scaling; smaller: weaker updates, so "
        "raise the learning rate. Above dim is rarely wanted.",
        "训练时把 LoRA 按 alpha/dim 缩放。与 dim 相等时不缩放；更小则更新更弱，需要提高学习率；一般不要超过 dim。",
        gt=0)
    network_train_unet_only: bool | None = field(
        None, "effect", "network",
        "Train only the UNet (Flux: the transformer): often enough for styles, needed with cached text-encoder "
        "outputs. Empty = the family's usual choice: SD1/SD2/SDXL also train the text encoder(s), Flux does not.",
        "只训练 UNet（Flux 为 transformer）：画风类常常足够，缓存文本编码器输出时必须开启。留空则按模型类别的"
        "常规做法：SD1/SD2/SDXL 同时训练文本编码器，Flux 不训练。")
    network_train_text_encoder_only: bool = field(
        False, "effect", "network", "Train only the text encoder.", "只训练文本编码器。", advanced=True)
    network_dropout: float | None = field(
        None, "effect", "network",
        "Dropout on the LoRA's down-projected features while training (kohya: 0.1-0.3). Fights overfitting; "
        "too high slows learning.",
        "训练时对 LoRA 降维后的特征做 dropout（常用 0.1-0.3），抑制过拟合；太高会学得很慢。",
        advanced=True, ge=0, lt=1)
    rank_dropout: float | None = field(
        None, "effect", "network",
        "Randomly switch off whole ranks of each LoRA per sample while training (kohya network_args rank_dropout).",
        "训练时对每个样本随机关闭 LoRA 的部分秩（对应 kohya 的 rank_dropout）。", advanced=True, ge=0, lt=1)
    module_dropout: float | None = field(
        None, "effect", "network",
        "Randomly skip a whole LoRA module for a step while training (kohya network_args module_dropout).",
        "训练时随机让某个 LoRA 模块在这一步完全不起作用（对应 kohya 的 module_dropout）。",
        advanced=True, ge=0, lt=1)
    network_weights: str | None = field(
        None, "effect", "network",
        "Continue from an existing LoRA file (kohya format): its weights are the starting point.",
        "从已有的 LoRA 文件（kohya 格式）继续训练，以它的权重为起点。", advanced=True, metadata=False)
    dim_from_weights: bool = field(
        False, "effect", "network",
        "Take network_dim and network_alpha from the network_weights file instead of the config.",
        "从 network_weights 文件中读取 network_dim 和 network_alpha，而不使用配置里的值。", advanced=True)
    scale_weight_norms: float | None = field(
        None, "effect", "network",
        "Max-norm regularisation: after each step, shrink any LoRA module whose weight norm exceeds this "
        "(1.0 is a common start). Keeps LoRAs from overpowering the base model and stacking badly.",
        "最大范数正则：每步之后把权重范数超过此值的 LoRA 模块缩小（常从 1.0 开始），防止 LoRA 过强、"
        "与其他 LoRA 叠加时崩坏。", advanced=True, gt=0)

    @model_validator(mode="after")
    def _weights_rules(self):
        if self.dim_from_weights and not self.network_weights:
            raise ValueError("dim_from_weights needs network_weights: give the LoRA file to read the dim from")
        return self
