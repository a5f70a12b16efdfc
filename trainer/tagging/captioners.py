"""Natural-language captioners through transformers: Florence-2 (a task such as <MORE_DETAILED_CAPTION>) and BLIP
(blip-image-captioning). A model folder as save_pretrained writes it; fp16 on CUDA, float32 on CPU."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from trainer.common.errors import UserError
from trainer.tagging.options import FLORENCE2, CaptionOptions


def torch_device(device: str) -> str:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to PyTorch", "use --device cpu (slow) or auto",
                        zh="--device cuda：PyTorch 看不到 CUDA 显卡", hint_zh="请使用 --device cpu（较慢）或 auto")
    return "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"


class TransformersCaptioner:
    """Loads processor and model from a folder; `caption` runs one batch with beam search."""

    def __init__(self, folder: Path, device: str, options: CaptionOptions, kind: str):
        import torch
        from transformers import AutoProcessor, BlipForConditionalGeneration, Florence2ForConditionalGeneration

        _refuse_remote_code(folder)
        self.kind, self.options = kind, options
        self.device = torch_device(device)
        self.dtype = torch.float16 if self.device == "cuda" else torch.float32
        model_class = Florence2ForConditionalGeneration if kind == FLORENCE2 else BlipForConditionalGeneration
        self.processor = AutoProcessor.from_pretrained(folder)
        self.model = model_class.from_pretrained(folder, dtype=self.dtype).to(self.device).eval()

    def caption(self, images: list[Image.Image]) -> list[str]:
        import torch

        images = [image.convert("RGB") for image in images]
        task = self.options.task
        prompt = {"text": [task] * len(images)} if self.kind == FLORENCE2 else {}
        inputs = self.processor(images=images, return_tensors="pt", padding=True, **prompt)
        inputs = {k: v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device)
                  for k, v in inputs.items()}
        try:
            with torch.inference_mode():
                ids = self.model.generate(**inputs, max_new_tokens=self.options.max_length,
                                          num_beams=self.options.num_beams, do_sample=False)
        except torch.OutOfMemoryError:
            raise UserError(f"out of GPU memory captioning {len(images)} images at once", "lower --batch-size "
                            "or --num-beams (the captions written so far stay)",
                            zh=f"一次标注 {len(images)} 张图片时显存不足",
                            hint_zh="请调小 --batch-size 或 --num-beams（已写好的标注会保留）") from None
        texts = self.processor.batch_decode(ids, skip_special_tokens=True)  # captions are plain text
        return [self.options.wrap(" ".join(text.split())) for text in texts]


def _refuse_remote_code(folder: Path) -> None:
    """The original microsoft/Florence-2 repos need their own Python code (trust_remote_code), which Danlu does
    not run; transformers reads the florence-community copies natively."""
    import json

    config = folder / "config.json"
    if config.is_file() and "auto_map" in json.loads(config.read_text(encoding="utf-8")):
        raise UserError(f"{folder} is a model that runs its own Python code (auto_map in config.json)",
                        "use its transformers-native copy, e.g. florence-community/Florence-2-large for "
                        "microsoft/Florence-2-large",
                        zh=f"{folder} 是需要运行自带 Python 代码的模型（config.json 中有 auto_map）",
                        hint_zh="请使用 transformers 原生版本，例如用 florence-community/Florence-2-large 代替 "
                                "microsoft/Florence-2-large")
