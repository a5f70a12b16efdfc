"""Model effect tab, caption and augmentation groups: what each training sample looks like in each step."""

from __future__ import annotations

from pydantic import field_validator, model_validator

from trainer.common.errors import RuleError
from trainer.config.schema.base import SchemaPart, field


class DataFields(SchemaPart):
    shuffle_caption: bool = field(
        False, "effect", "caption",
        "Shuffle the comma-separated tags of each caption every time it is used, so no tag is always first. "
        "Tags early in a caption weigh more; shuffling spreads what is learned over all tags. Usual for "
        "tag-style captions, off for sentences.",
        "每次使用标注时打乱其中以逗号分隔的标签顺序。越靠前的标签权重越大，打乱后各标签学得更均衡，"
        "也不会让模型把画面死绑在前几个标签上。标签式标注常开，句子式标注不要开。")
    keep_tokens: int = field(
        0, "effect", "caption",
        "The first N comma-separated tags stay in front and are never shuffled or dropped; put the trigger "
        "word first and use 1. A tag is everything between two commas, however many words it has.",
        "前 N 个以逗号分隔的标签固定在最前面，不参与打乱，也不会被标签丢弃。把触发词放在开头并设为 1。"
        "一个“标签”指两个逗号之间的全部内容，不管里面有几个词。", ge=0)
    keep_tokens_separator: str = field(
        "", "effect", "caption",
        "A marker like ||| in the caption text: tags before it stay fixed in front, instead of counting "
        "keep_tokens. A second marker starts a fixed tail that stays at the end, e.g. 'me, ||| red hair, smile "
        "||| best quality'. The marker itself is removed before training. Empty = off.",
        "写在标注里的分隔标记，如 |||：它前面的标签固定在开头，代替 keep_tokens 的计数；再写一个标记，"
        "它后面的标签固定在末尾，例如 'me, ||| red hair, smile ||| best quality'。训练时会去掉标记本身。留空表示不用。",
        advanced=True)
    caption_separator: str = field(
        ",", "effect", "caption",
        "What separates tags for shuffling, keep_tokens and tag dropout. The processed caption is joined with "
        "', '.", "用于打乱、keep_tokens 和标签丢弃的标签分隔符。处理后的标注统一用 ', ' 连接。", advanced=True)
    secondary_separator: str = field(
        "", "effect", "caption",
        "A second separator, e.g. ;;;, that glues tags into one group: 'red hair;;;blue eyes' is shuffled and "
        "dropped as one tag, then the separator becomes caption_separator. Empty = off.",
        "第二分隔符，如 ;;;，把几个标签粘成一组：'red hair;;;blue eyes' 作为一个整体被打乱或丢弃，"
        "之后分隔符会换成 caption_separator。留空表示不用。", advanced=True)
    enable_wildcard: bool = field(
        False, "effect", "caption",
        "Wildcards in captions: {red|blue|green} becomes one of the choices, picked anew each time the image "
        "is used; write {{ and }} for literal braces.",
        "标注中的通配符：{red|blue|green} 每次使用该图时随机取其中一项；需要原样的花括号时写 {{ 和 }}。",
        advanced=True)
    caption_prefix: str = field(
        "", "effect", "caption",
        "Text put before every caption with a space, e.g. a trigger word plus a comma: 'mychar,'. Its tags "
        "count toward keep_tokens.",
        "加在每条标注前面的文字（以空格相连），例如触发词加逗号：'mychar,'。计算 keep_tokens 时，前缀里的标签也算在内。")
    caption_suffix: str = field(
        "", "effect", "caption", "Text put after every caption with a space.", "加在每条标注后面的文字（以空格相连）。")
    caption_dropout_rate: float = field(
        0.0, "effect", "caption",
        "Chance that a sample trains with an empty caption. A little (0.05-0.1) teaches the look even without "
        "the prompt, which helps styles; too much weakens the trigger words.",
        "每个样本以空标注训练的概率。少量（0.05-0.1）让模型在不写提示词时也学到画面特征，适合画风；"
        "太高会削弱触发词的作用。", ge=0, le=1)
    caption_dropout_every_n_epochs: int = field(
        0, "effect", "caption",
        "Train every N-th epoch (epochs N, 2N, ...) with all captions empty. 0 = off.",
        "每隔 N 轮（第 N、2N……轮）整轮使用空标注训练。0 表示不用。", advanced=True, ge=0)
    caption_tag_dropout_rate: float = field(
        0.0, "effect", "caption",
        "Chance that each tag (except the kept ones) is left out of a sample's caption. 0.1 or so makes the "
        "LoRA rely less on any single tag.",
        "每个标签（固定的除外）被从样本标注中去掉的概率。0.1 左右可让 LoRA 不过度依赖某个标签。", ge=0, le=1)
    flip_aug: bool = field(
        False, "effect", "augmentation",
        "Mirror half of the samples left-right: more variety from few images. Off for asymmetric subjects "
        "(side parting, one-sided accessories, text), which would come out on both sides. Works with "
        "cache_latents (both versions are cached).",
        "随机把一半样本左右镜像，图片少时增加多样性。主体不对称时（偏分发型、单侧饰品、文字）不要开，"
        "否则生成时会左右都出现。可与 cache_latents 同时使用（原图和镜像都会被缓存）。")
    color_aug: bool = field(
        False, "effect", "augmentation",
        "Small random colour changes as in sd-scripts: a third of the samples get either a hue shift of up to "
        "±16° or a slight gamma change. Needs cache_latents off (it is a config error otherwise), so training "
        "is slower. Off when exact colours (hair, eyes, outfit) matter.",
        "与 sd-scripts 相同的轻微随机颜色变化：三分之一的样本会色相偏移最多 ±16° 或轻微改变伽马。"
        "必须关闭 cache_latents（否则配置报错），训练会变慢。角色的发色、瞳色、服装颜色需要准确时不要开。",
        advanced=True)
    random_crop: bool = field(
        False, "effect", "augmentation",
        "Crop each sample at a random position when an image is larger than its bucket, instead of the centre: "
        "edges are seen too. Needs cache_latents off (it is a config error otherwise).",
        "图片比所在分桶大时，每次在随机位置裁剪，而不是总裁中间，边缘内容也能学到。必须关闭 cache_latents"
        "（否则配置报错）。", advanced=True)

    @field_validator("caption_separator")
    @classmethod
    def _separator_not_empty(cls, value: str) -> str:
        if not value:
            raise RuleError("must not be empty; the usual separator is ,", zh="不能为空；常用的分隔符是英文逗号 ,")
        return value

    @model_validator(mode="after")
    def _augment_needs_pixels(self) -> DataFields:
        # Part of TrainConfig, which holds cache_latents: cached latents are encoded once, before training.
        pixel_augments = [name for name in ("color_aug", "random_crop") if getattr(self, name)]
        if pixel_augments and self.cache_latents:
            keys = " and ".join(pixel_augments)
            raise RuleError(f"{keys}: cannot be used with cache_latents, which encodes each image once before "
                            f"training, while these options vary the pixels in every step; set cache_latents: "
                            f"false, or turn {keys} off (flip_aug works with the cache)", *pixel_augments,
                            "cache_latents",
                            zh=f"{keys} 不能和 cache_latents 同时使用：缓存 latent 会在训练前把每张图只编码"
                            f"一次，而这些选项每一步都要改动像素；请把 cache_latents 设为 false，或关掉 {keys}"
                            "（flip_aug 可以和缓存一起用）")
        return self
