"""WD14-family taggers (SmilingWolf's wd-v1-4 and wd-v3 models) through onnxruntime, CPU or CUDA.

The input is what sd-scripts' finetune/tag_images_by_wd14_tagger.py feeds: the image on a white square (centred,
transparency on white), resized to the model's side (448), BGR, float32 0-255, NHWC. The output is one sigmoid
probability per row of the model's selected_tags.csv (tag_id,name,category,count; category 0 general, 4
character, 9 rating).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from trainer.common.errors import UserError
from trainer.common.text import read_user_text
from trainer.tagging.options import TagOptions

GENERAL, CHARACTER, RATING = "0", "4", "9"
DEFAULT_SIDE = 448
# Tags whose underscore is part of the face, never a space (SmilingWolf's list); sd-scripts keeps tags of 3
# characters or fewer for the same reason.
KAOMOJI = frozenset({"0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9",
                     ">_o", "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||"})


@dataclass(frozen=True)
class Labels:
    names: list[str]
    categories: list[str]

    @classmethod
    def read(cls, path: Path) -> Labels:
        rows = list(csv.reader(read_user_text(path).splitlines()))
        if not rows or rows[0][:3] != ["tag_id", "name", "category"]:
            raise UserError(f"'{path}' is not a WD14 selected_tags.csv (its first line should be "
                            "tag_id,name,category,count)", "use the selected_tags.csv of the same repo as model.onnx",
                            zh=f"'{path}' 不是 WD14 的 selected_tags.csv（第一行应为 tag_id,name,category,count）",
                            hint_zh="请使用与 model.onnx 同一仓库的 selected_tags.csv")
        body = [row for row in rows[1:] if len(row) >= 3]
        return cls([row[1] for row in body], [row[2] for row in body])


def tag_text(tag: str, options: TagOptions) -> str:
    if options.underscores_to_spaces and len(tag) > 3 and tag not in KAOMOJI:
        return tag.replace("_", " ")
    return tag


def select_tags(probs: np.ndarray, labels: Labels, options: TagOptions) -> list[str]:
    """The caption's tags from one image's probabilities: the always-first tags, the most likely rating (when
    asked), then character and general tags above their thresholds, most confident first, at most max_tags."""
    excluded = {tag_text(tag, options).lower() for tag in options.exclude} | {t.lower() for t in options.exclude}
    found: list[tuple[int, float, str]] = []  # (group: character before general, -probability, tag)
    for index, (name, category) in enumerate(zip(labels.names, labels.categories)):
        threshold = {GENERAL: options.general_threshold, CHARACTER: options.character_threshold}.get(category)
        if threshold is not None and probs[index] >= threshold:
            found.append((0 if category == CHARACTER else 1, -float(probs[index]), tag_text(name, options)))
    tags = [tag for _, _, tag in sorted(found) if tag.lower() not in excluded]
    if options.max_tags:
        tags = tags[:options.max_tags]
    ratings = [i for i, category in enumerate(labels.categories) if category == RATING]
    if options.rating and ratings:
        rating = tag_text(labels.names[max(ratings, key=lambda i: probs[i])], options)
        tags = ([rating] if rating.lower() not in excluded else []) + tags
    first = list(options.first)
    return first + [tag for tag in tags if tag not in first]


def tagger_input(image: Image.Image, side: int) -> np.ndarray:
    """One image as the model takes it: HWC, BGR, float32 0-255, padded white to a square, side x side."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
        canvas.alpha_composite(image.convert("RGBA"))
        image = canvas
    image = image.convert("RGB")
    size = max(image.size)
    square = Image.new("RGB", (size, size), (255, 255, 255))
    square.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    # Area averaging when shrinking (sd-scripts: cv2.INTER_AREA), Lanczos when enlarging (its pil_resize).
    resample = Image.Resampling.BOX if size > side else Image.Resampling.LANCZOS
    array = np.asarray(square.resize((side, side), resample), dtype=np.float32)
    return np.ascontiguousarray(array[:, :, ::-1])


def providers(device: str) -> list[str]:
    """onnxruntime's providers for device auto|cpu|cuda: CUDA (then CPU) when asked or available."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise UserError("--device cuda: this onnxruntime has no CUDA support", "pip install onnxruntime-gpu (in "
                        "place of onnxruntime), or use --device cpu", zh="--device cuda：当前 onnxruntime 不支持 CUDA",
                        hint_zh="请安装 onnxruntime-gpu（替换 onnxruntime），或使用 --device cpu")
    if device != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class WdTagger:
    """A WD14 model folder (model.onnx, selected_tags.csv) loaded on a device."""

    def __init__(self, folder: Path, device: str, options: TagOptions):
        import onnxruntime as ort

        self.options = options
        self.labels = Labels.read(folder / "selected_tags.csv")
        self.session = ort.InferenceSession(str(folder / "model.onnx"), providers=providers(device))
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        shape = model_input.shape  # [batch, side, side, 3]; a fixed batch (int) means one image per run
        self.side = shape[1] if isinstance(shape[1], int) else DEFAULT_SIDE
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else 0
        outputs = self.session.get_outputs()[0].shape[-1]
        if isinstance(outputs, int) and outputs != len(self.labels.names):
            raise UserError(f"{folder}: model.onnx gives {outputs} tags but selected_tags.csv lists "
                            f"{len(self.labels.names)}", "use the model and the csv of the same repo",
                            zh=f"{folder}：model.onnx 输出 {outputs} 个标签，而 selected_tags.csv 有 "
                               f"{len(self.labels.names)} 个", hint_zh="请使用同一仓库的模型和 csv")

    def caption(self, images: list[Image.Image]) -> list[str]:
        batch = np.stack([tagger_input(image, self.side) for image in images])
        step = self.fixed_batch or len(batch)
        probs = np.concatenate([self._run(batch[i:i + step]) for i in range(0, len(batch), step)])
        return [", ".join(select_tags(row, self.labels, self.options)) for row in probs]

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        count = len(chunk)
        if self.fixed_batch > count:  # a model exported for a fixed batch: fill it, keep the real rows
            chunk = np.concatenate([chunk, np.zeros((self.fixed_batch - count, *chunk.shape[1:]), np.float32)])
        return self.session.run(None, {self.input_name: chunk})[0][:count]
