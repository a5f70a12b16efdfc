"""Model effect tab, network group: the LoRA's shape and which model parts it trains."""

from __future__ import annotations

from typing import Literal

from .base import SchemaPart, field


class NetworkFields(SchemaPart):
    network_module: Literal["networks.lora"] = field(
        "networks.lora", "effect", "network",
        "Network type (sd-scripts module name). networks.lora: LoRA on the attention and feed-forward layers.",
        "网络类型（sd-scripts 的模块名）。networks.lora：作用于注意力层和前馈层的 LoRA。", advanced=True)
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
    network_train_unet_only: bool = field(
        False, "effect", "network",
        "Train only the UNet: often enough for styles, needed with cached text-encoder outputs.",
        "只训练 UNet：画风类常常足够，缓存文本编码器输出时必须开启。")
    network_train_text_encoder_only: bool = field(
        False, "effect", "network", "Train only the text encoder.", "只训练文本编码器。", advanced=True)
