"""Model effect tab, text group: how captions become text-encoder embeddings; and caching those embeddings."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from trainer.common.errors import RuleError
from trainer.config.schema.base import SchemaPart, field

# Caption options that make a caption differ from step to step (keys of trainer/schema/data.py): a text-encoder
# cache encodes each caption once, so none of them may be on while it is used.
CAPTION_CHANGES = ("shuffle_caption", "caption_dropout_rate", "caption_tag_dropout_rate",
                   "caption_dropout_every_n_epochs", "enable_wildcard")


class TextFields(SchemaPart):
    clip_skip: int = field(
        1, "effect", "text",
        "Use the text encoder's output this many layers from the end: 2 for anime models of the NovelAI "
        "lineage, 1 for SD1.5 and realistic models. Use the value you will generate with.",
        "使用文本编码器倒数第几层的输出：NovelAI 系二次元模型用 2，SD1.5 和写实模型用 1。与出图时的设置保持一致。",
        ge=1, le=12)
    max_token_length: Literal[None, 75, 150, 225] = field(
        None, "effect", "text",
        "How many caption tokens the text encoder reads (a tag is one to a few tokens). Empty = 75: anything "
        "after is cut off, so those tags are not learned and what they describe sticks to the LoRA. 150 or 225 "
        "for long tag lists, read in windows of 75 tokens much like A1111 reads long prompts; a little slower. "
        "Captions longer than the limit are still cut.",
        "文本编码器读取的标注 token 数（一个标签占一到几个 token）。留空即 75：后面的内容被截掉，"
        "这些标签学不到，它们描述的内容会被混进 LoRA 本身。标签很长时用 150 或 225，每 75 个 token 一段"
        "分别编码，与 A1111 处理长提示词的方式相近，训练稍慢。超过这个长度的标注仍会被截断。")
    cache_text_encoder_outputs: bool = field(
        False, "steps", "speed",
        "Encode every caption with the text encoder once before training, then keep the text encoder off the "
        "GPU: saves VRAM and some time per step. The text encoder is then not trained (as in sd-scripts), and "
        "the captions must stay the same (no shuffle_caption, caption dropout or wildcards).",
        "训练前用文本编码器把每条标注编码一次并缓存，之后文本编码器移出显卡：省显存，每步也稍快。"
        "此时不训练文本编码器（与 sd-scripts 相同），且标注必须每步不变（不能用 shuffle_caption、标注丢弃或通配符）。",
        advanced=True, metadata=False)
    cache_text_encoder_outputs_to_disk: bool = field(
        False, "steps", "speed",
        "Also keep the text-encoder cache next to the images (image.png.te.safetensors), so later runs with "
        "the same captions, model, clip_skip and max_token_length skip encoding. Turns caching on.",
        "同时把文本编码器缓存保存在图片旁边（image.png.te.safetensors），之后标注、模型、clip_skip 和 "
        "max_token_length 都不变的训练可直接复用。开启它也就开启了缓存。", advanced=True, metadata=False)

    @property
    def text_encoder_outputs_cached(self) -> bool:
        # As in sd-scripts, the disk cache implies the cache.
        return self.cache_text_encoder_outputs or self.cache_text_encoder_outputs_to_disk

    @model_validator(mode="after")
    def _cache_needs_fixed_text(self) -> TextFields:
        # Part of TrainConfig, which holds the network and caption keys; getattr keeps this class usable alone.
        if not self.text_encoder_outputs_cached:
            return self
        key = "cache_text_encoder_outputs" if self.cache_text_encoder_outputs else "cache_text_encoder_outputs_to_disk"
        if getattr(self, "network_train_unet_only", None) is False or getattr(
                self, "network_train_text_encoder_only", False):
            raise RuleError(f"{key} needs a frozen text encoder, but the text encoder is trained: set "
                            f"network_train_unet_only: true, or {key}: false", key, "network_train_unet_only",
                            zh=f"{key} 需要冻结文本编码器，但现在文本编码器在训练：请设 network_train_unet_only: true，"
                            f"或 {key}: false")
        changing = [name for name in CAPTION_CHANGES if getattr(self, name, False)]
        if changing:
            raise RuleError(f"{key} encodes each caption once, but {', '.join(changing)} change the captions "
                            f"during training: turn {'it' if len(changing) == 1 else 'them'} off, or set {key}: false",
                            key, *changing,
                            zh=f"{key} 每条标注只编码一次，但 {', '.join(changing)} 会在训练中改动标注：请关掉它们，"
                            f"或设 {key}: false")
        return self
