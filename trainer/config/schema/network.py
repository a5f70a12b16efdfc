"""Model effect tab, network group: the LoRA's shape and which model parts it trains."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator

from trainer.adapters.sd_scripts import NetworkModule, map_network_config
from trainer.adapters.spec import MAX_RANK, set_keys
from trainer.adapters.types import NETWORK_TYPES
from trainer.common.errors import RuleError
from trainer.config.schema.base import SchemaPart, field

NetworkTypeName = Literal[tuple(NETWORK_TYPES)]  # type: ignore[valid-type]


class NetworkFields(SchemaPart):
    network_type: NetworkTypeName = field(
        "lora", "effect", "network",
        "What kind of adapter to train. lora: attention and feed-forward layers (the usual choice); locon: LoRA "
        "plus the UNet's convolution layers, catches textures and styles better; loha / lokr (LyCORIS): "
        "Hadamard / Kronecker products, more expressive per parameter and smaller files, often with a higher "
        "learning rate; dylora: trains every rank up to network_dim at once, so a smaller rank can be cut later.",
        "要训练的网络类型。lora：作用于注意力层和前馈层（最常用）；locon：在 LoRA 之外再训练 UNet 的卷积层，"
        "对质感和画风更敏感；loha / lokr（LyCORIS）：用哈达玛积 / 克罗内克积组合权重，同样参数量表达力更强、文件更小，"
        "通常需要更高的学习率；dylora：一次训练从小到 network_dim 的所有秩，之后可以截取任意更小的秩。",
        metadata=False)
    network_module: NetworkModule = field(
        "networks.lora", "effect", "network",
        "sd-scripts' module name; set from network_type, or give sd-scripts' form: networks.lora (with "
        "network_args conv_dim = LoCon), networks.dylora, lycoris.kohya (with network_args algo=locon/loha/lokr). "
        "networks.lora_flux: sd-scripts' name for LoRA on Flux.1.",
        "sd-scripts 的模块名；一般由 network_type 决定，也可以照 sd-scripts 的写法：networks.lora（network_args 里带 "
        "conv_dim 即 LoCon）、networks.dylora、lycoris.kohya（network_args 里写 algo=locon/loha/lokr）。"
        "networks.lora_flux 是 sd-scripts 对 Flux.1 LoRA 的叫法。", advanced=True)
    network_args: list[str] | None = field(
        None, "effect", "network",
        "sd-scripts' extra network arguments as key=value, e.g. [\"conv_dim=4\", \"conv_alpha=1\", \"algo=loha\"]. "
        "Read into the keys of their own (conv_dim, conv_alpha, factor, unit, rank_dropout, module_dropout); "
        "unknown ones are refused.",
        "sd-scripts 的网络附加参数，写成 key=value，例如 [\"conv_dim=4\", \"conv_alpha=1\", \"algo=loha\"]。"
        "会被读入对应的独立参数（conv_dim、conv_alpha、factor、unit、rank_dropout、module_dropout），不认识的参数会报错。",
        advanced=True, metadata=False)
    network_dim: int = field(
        32, "effect", "network",
        "LoRA rank. Higher keeps more detail but also more noise, and the file grows; 8-32 for a character, "
        "32-128 for a style.",
        "LoRA 的秩（维度）。越大能记住的细节越多，但也更容易学到无关内容，文件也更大；角色常用 8-32，画风 32-128。",
        ge=1)
    network_alpha: float = field(
        32.0, "effect", "network",
        "Scales the LoRA by alpha/dim while training. Equal to dim: no scaling; smaller: weaker updates, so "
        "raise the learning rate. Above dim is rarely wanted.",
        "训练时把 LoRA 按 alpha/dim 缩放。与 dim 相等时不缩放；更小则更新更弱，需要提高学习率；一般不要超过 dim。",
        gt=0)
    conv_dim: int | None = field(
        None, "effect", "network",
        "Rank of the convolution layers (locon, loha, lokr). Empty = network_dim. Smaller than network_dim is "
        "common (4-16): the conv layers are many and large.",
        "卷积层的秩（locon、loha、lokr 使用）。留空则等于 network_dim。常比 network_dim 小（4-16），因为卷积层多且大。",
        metadata=False, ge=1)
    conv_alpha: float | None = field(
        None, "effect", "network",
        "Alpha of the convolution layers, scaling them by conv_alpha/conv_dim like network_alpha. Empty = "
        "network_alpha (sd-scripts' network_args conv_dim without conv_alpha means 1).",
        "卷积层的 alpha，像 network_alpha 一样按 conv_alpha/conv_dim 缩放。留空则等于 network_alpha"
        "（照 sd-scripts 写法在 network_args 里只给 conv_dim 时为 1）。", metadata=False, gt=0)
    factor: int = field(
        -1, "effect", "network",
        "LoKr only: each weight is a Kronecker product of a small factor of this size and a larger one. -1 = as "
        "balanced as possible (LyCORIS's default, the smallest file); a fixed 4-16 makes the other factor larger, "
        "so the file grows and the LoKr can hold more detail.",
        "仅 LoKr：每个权重由一个这么大的小因子和一个大因子做克罗内克积得到。-1 表示尽量均衡（LyCORIS 默认，文件最小）；"
        "固定为 4-16 时另一个因子变大，文件随之变大，能容纳更多细节。", metadata=False)
    unit: int = field(
        1, "effect", "network",
        "DyLoRA only: ranks are trained in blocks of this size; network_dim must be a multiple. Larger units "
        "train faster but can be cut only at multiples of unit.",
        "仅 DyLoRA：以多少个秩为一组进行训练，network_dim 必须是它的整数倍。越大训练越快，但只能按它的倍数截取秩。",
        metadata=False, ge=1)
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
        "从已有的 LoRA 文件（kohya 格式）继续训练，以它的权重为起点。", advanced=True,
        metadata=False, machine=True, path="file")
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

    @model_validator(mode="before")
    @classmethod
    def _sd_scripts_network_forms(cls, data: Any) -> Any:
        return map_network_config(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _weights_rules(self):
        if self.dim_from_weights and not self.network_weights:
            raise RuleError("dim_from_weights needs network_weights: give the LoRA file to read the dim from",
                            "dim_from_weights", "network_weights",
                            zh="dim_from_weights 需要 network_weights：请填上要读取 dim 的 LoRA 文件")
        return self

    @model_validator(mode="after")
    def _network_type_rules(self):
        """The chosen type refuses other types' own keys and conv settings it has no layers for, then its own."""
        kind = NETWORK_TYPES[self.network_type]
        for owner in NETWORK_TYPES.values():
            for key in owner.own_keys:
                if owner is not kind and getattr(self, key) != type(self).model_fields[key].default:
                    raise RuleError(f"{key} is for network_type {owner.name}, and network_type is {kind.name}; "
                                    f"remove {key}", key, "network_type",
                                    zh=f"{key} 属于 network_type {owner.name}，而现在的 network_type 是 {kind.name}；"
                                    f"请去掉 {key}")
        if not kind.convs and (self.conv_dim is not None or self.conv_alpha is not None):
            *others, last = [other.name for other in NETWORK_TYPES.values() if other.convs]
            raise RuleError(f"conv_dim / conv_alpha: network_type {kind.name} has no conv layers; use "
                            f"{', '.join(others)} or {last}", *set_keys(self, "conv_dim", "conv_alpha"), "network_type",
                            zh=f"conv_dim / conv_alpha：network_type {kind.name} 没有卷积层；请改用 "
                            f"{'、'.join(others)} 或 {last}")
        for key in ("network_dim", "conv_dim"):
            rank = getattr(self, key)
            if rank is not None and not kind.takes_rank(rank):
                full = [f"network_type {other.name} takes {other.full_matrix_rank} or more as its full matrices"
                        for other in NETWORK_TYPES.values() if other.full_matrix_rank]
                full_zh = [f"network_type {other.name} 取 {other.full_matrix_rank} 及以上即为满秩矩阵"
                           for other in NETWORK_TYPES.values() if other.full_matrix_rank]
                raise RuleError(f"{key} {rank}: ranks go up to {MAX_RANK} ({'; '.join(full)})", key, "network_type",
                                zh=f"{key} {rank}：秩（rank）最大为 {MAX_RANK}（{'；'.join(full_zh)}）")
        kind.check(self)
        return self

    @property
    def conv_dim_value(self) -> int:
        return self.conv_dim or self.network_dim

    @property
    def conv_alpha_value(self) -> float:
        return self.conv_alpha or self.network_alpha
