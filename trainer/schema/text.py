"""Model effect tab, text group: how captions become text-encoder embeddings."""

from __future__ import annotations

from .base import SchemaPart, field


class TextFields(SchemaPart):
    clip_skip: int = field(
        1, "effect", "text",
        "Use the text encoder's output this many layers from the end: 2 for anime models of the NovelAI "
        "lineage, 1 for SD1.5 and realistic models. Use the value you will generate with.",
        "使用文本编码器倒数第几层的输出：NovelAI 系二次元模型用 2，SD1.5 和写实模型用 1。与出图时的设置保持一致。",
        ge=1, le=12)
