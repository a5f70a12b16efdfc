"""What a tagger or captioner is asked to do: its kind, its options, the default models. Torch-free."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from trainer.common.errors import UserError

WD14, FLORENCE2, BLIP = "wd14", "florence2", "blip"
KINDS = (WD14, FLORENCE2, BLIP)
DEFAULT_MODELS = {  # what `caption --kind K` downloads without --model
    WD14: "SmilingWolf/wd-swinv2-tagger-v3",
    FLORENCE2: "florence-community/Florence-2-large",  # the transformers-native copy of microsoft/Florence-2-large
    BLIP: "Salesforce/blip-image-captioning-large",
}
# The files each kind needs from a Hugging Face repo (snapshot_download's allow_patterns).
FILES = {
    WD14: ["model.onnx", "selected_tags.csv"],
    FLORENCE2: ["*.json", "*.safetensors", "*.txt", "*.model"],
    BLIP: ["*.json", "*.safetensors", "*.txt", "*.model"],
}
WD14_FILES = ("model.onnx", "selected_tags.csv")
FLORENCE_TASKS = ("<MORE_DETAILED_CAPTION>", "<DETAILED_CAPTION>", "<CAPTION>")


@dataclass(frozen=True)
class TagOptions:
    """WD14 tagging, as sd-scripts' tag_images_by_wd14_tagger.py names them: thresholds for general (category 0)
    and character (4) tags, one rating tag (category 9) or none, underscores to spaces (kaomoji like ^_^ kept),
    tags to exclude, tags always first (the trigger word: added when not predicted), at most max_tags predicted
    tags (0: all), most confident first."""

    general_threshold: float = 0.35
    character_threshold: float = 0.85  # SmilingWolf's recommendation; lower finds more (and wrong) characters
    rating: bool = False
    underscores_to_spaces: bool = True
    exclude: tuple[str, ...] = ()
    first: tuple[str, ...] = ()
    max_tags: int = 0


@dataclass(frozen=True)
class CaptionOptions:
    """Natural-language captioning: the Florence-2 task, the longest caption in tokens, beam search width, and
    text put before and after each caption (joined with ", ")."""

    task: str = FLORENCE_TASKS[0]
    max_length: int = 256
    num_beams: int = 3
    prefix: str = ""
    suffix: str = ""

    def wrap(self, caption: str) -> str:
        return ", ".join(part.strip(" ,") for part in (self.prefix, caption, self.suffix) if part.strip(" ,"))


def kind_of_folder(folder: Path) -> str | None:
    """The kind of a model folder: WD14 files, or the model_type in config.json; None when neither says."""
    if all((folder / name).is_file() for name in WD14_FILES):
        return WD14
    config = folder / "config.json"
    if config.is_file():
        try:
            model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type", "")
        except (OSError, ValueError):
            return None
        return {"florence2": FLORENCE2, "blip": BLIP}.get(model_type)
    return None


def kind_of_name(source: str) -> str | None:
    """A guess from a repo id or folder name: "...tagger..." or "wd-..." is WD14, "...florence..." Florence-2."""
    name = source.lower().replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    if "florence" in name:
        return FLORENCE2
    if "blip" in name:
        return BLIP
    if "tagger" in name or name.startswith("wd-"):
        return WD14
    return None


def resolve_kind(kind: str | None, source: str, folder: Path | None = None) -> str:
    """The kind asked for, else what the folder or the name says; a UserError when nothing does."""
    found = kind or (kind_of_folder(folder) if folder else None) or kind_of_name(source)
    if found:
        return found
    raise UserError(f"cannot tell what kind of model '{source}' is", "add --kind " + "|".join(KINDS),
                    zh=f"无法判断 '{source}' 是哪种模型", hint_zh="请加上 --kind " + "|".join(KINDS))
