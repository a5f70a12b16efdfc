"""What a caption becomes in one training sample: kohya sd-scripts' BaseDataset.process_caption semantics.

Order, as sd-scripts: prefix/suffix (joined with a space) -> whole-caption dropout -> wildcards -> fixed and
free tags (keep_tokens or keep_tokens_separator) -> shuffle of the free tags -> tag dropout -> tags joined
with ", " -> secondary_separator replaced by caption_separator.

No torch here, so the GUI can import `preview_captions` to show what training will make of a caption.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainer.config import TrainConfig

JOINER = ", "  # sd-scripts joins the processed tags with ", " whatever caption_separator is
CAPTION_STREAM = "caption"
# "{{" and "}}" are literal braces; "{a|b|c}" is a wildcard. One left-to-right pass handles both.
_WILDCARD = re.compile(r"\{\{|\}\}|\{([^{}]+)\}")


def sample_rng(seed: int, epoch: int, index: int, stream: str) -> random.Random:
    """The random source of one sample (entry `index` of the epoch's entries) for one purpose.

    Built from values only, never from global state, so DataLoader workers, several processes and batch
    sizes all draw the same numbers for the same sample; separate streams ("caption", "image") keep a caption
    option from changing the augmentation draws and the other way round. A str seed is hashed with SHA-512 by
    `random`, so it is stable across processes and Python runs.
    """
    return random.Random(f"{seed}:{epoch}:{index}:{stream}")


@dataclass(frozen=True)
class CaptionOptions:
    """The caption keys of the config; field names are the config keys."""

    shuffle_caption: bool = False
    keep_tokens: int = 0
    keep_tokens_separator: str = ""
    caption_separator: str = ","
    secondary_separator: str = ""
    enable_wildcard: bool = False
    caption_prefix: str = ""
    caption_suffix: str = ""
    caption_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    caption_tag_dropout_rate: float = 0.0

    @classmethod
    def from_config(cls, config: TrainConfig) -> CaptionOptions:
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


def process_caption(caption: str, options: CaptionOptions, rng: random.Random, epoch: int) -> str:
    """The caption one sample trains with in `epoch` (1-based)."""
    if options.caption_prefix:
        caption = f"{options.caption_prefix} {caption}"
    if options.caption_suffix:
        caption = f"{caption} {options.caption_suffix}"
    if _dropped(options, rng, epoch):
        return ""
    if options.enable_wildcard:
        caption = _expand_wildcards(caption, rng)
    caption = _arrange_tags(caption, options, rng)
    if options.secondary_separator:
        caption = caption.replace(options.secondary_separator, options.caption_separator)
    return caption


def preview_captions(caption: str, config: TrainConfig, count: int = 5, epoch: int = 1) -> list[str]:
    """What `caption` becomes for the first `count` samples of `epoch`, drawn exactly as training draws them."""
    options = CaptionOptions.from_config(config)
    return [process_caption(caption, options, sample_rng(config.seed, epoch, index, CAPTION_STREAM), epoch)
            for index in range(count)]


def _dropped(options: CaptionOptions, rng: random.Random, epoch: int) -> bool:
    every = options.caption_dropout_every_n_epochs
    if every and epoch % every == 0:
        return True
    return options.caption_dropout_rate > 0 and rng.random() < options.caption_dropout_rate


def _expand_wildcards(caption: str, rng: random.Random) -> str:
    def replace(match: re.Match) -> str:
        if match.group(1) is None:
            return match.group(0)[0]  # "{{" -> "{", "}}" -> "}"
        return rng.choice(match.group(1).split("|"))

    return _WILDCARD.sub(replace, caption)


def _arrange_tags(caption: str, options: CaptionOptions, rng: random.Random) -> str:
    marker = options.keep_tokens_separator
    marked = bool(marker) and marker in caption
    # sd-scripts leaves the caption untouched (a marker included) unless tags move or drop; Danlu always
    # removes the marker, which the text encoder would otherwise read as part of the prompt.
    if not (options.shuffle_caption or options.caption_tag_dropout_rate > 0 or marked):
        return caption
    fixed, free, tail = _split_tags(caption, options)
    if options.shuffle_caption:
        rng.shuffle(free)
    if options.caption_tag_dropout_rate > 0:
        free = [tag for tag in free if rng.random() >= options.caption_tag_dropout_rate]
    return JOINER.join(fixed + free + tail)


def _split_tags(caption: str, options: CaptionOptions) -> tuple[list[str], list[str], list[str]]:
    """(fixed head, free tags, fixed tail): the marker splits when present, else keep_tokens counts."""
    marker = options.keep_tokens_separator
    if marker and marker in caption:
        head, _, rest = caption.partition(marker)
        free, _, tail = rest.partition(marker)
        return _tags(head, options), _tags(free, options), _tags(tail, options)
    tags = _tags(caption, options)
    return tags[:options.keep_tokens], tags[options.keep_tokens:], []


def _tags(text: str, options: CaptionOptions) -> list[str]:
    return [tag.strip() for tag in text.split(options.caption_separator) if tag.strip()]
