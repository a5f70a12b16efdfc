"""Preview images during training, from sd-scripts-style prompt lines.

A line is a prompt followed by options: --n negative prompt, --w width, --h height, --s steps,
--l guidance scale, --d seed. Lines starting with # are comments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import diffusers
from diffusers import StableDiffusionPipeline

from .config import SAMPLERS
from .errors import UserError
from .families.sd import SDModel, encode_tokens, tokenize

@dataclass
class SamplePrompt:
    prompt: str
    negative: str = ""
    width: int = 512
    height: int = 512
    steps: int = 20
    scale: float = 7.0
    seed: int | None = None


def parse_prompt_line(line: str, default_size: tuple[int, int]) -> SamplePrompt:
    parts = re.split(r"\s--(?=[a-z]\s)", " " + line.strip())
    spec = SamplePrompt(parts[0].strip(), width=default_size[0], height=default_size[1])
    setters = {"n": ("negative", str), "w": ("width", int), "h": ("height", int), "s": ("steps", int),
               "l": ("scale", float), "d": ("seed", int)}
    for part in parts[1:]:
        flag, _, value = part.partition(" ")
        name, convert = setters[flag]
        try:
            setattr(spec, name, convert(value.strip()))
        except ValueError:
            raise UserError(f"sample_prompts: '--{flag} {value.strip()}' in '{line.strip()}' is not a "
                            f"valid {name}") from None
    spec.width, spec.height = (max(64, spec.width // 8 * 8), max(64, spec.height // 8 * 8))
    return spec


def load_prompts(value: str | list[str] | None, default_size: tuple[int, int]) -> list[SamplePrompt]:
    if value is None:
        return []
    if isinstance(value, str):
        path = Path(value).expanduser()
        if not path.is_file():
            raise UserError(f"sample_prompts: file '{value}' does not exist",
                            "give a text file with one prompt a line, or a list of prompts")
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    else:
        lines = value
    lines = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return [parse_prompt_line(line, default_size) for line in lines]


def make_sampler(name: str, training_scheduler_config) -> object:
    class_name, kwargs = SAMPLERS[name]
    return getattr(diffusers, class_name).from_config(training_scheduler_config, **kwargs)


@torch.no_grad()
def generate(model: SDModel, spec: SamplePrompt, sampler_name: str, clip_skip: int, seed: int,
             device: torch.device, autocast, max_token_length: int | None = None) -> np.ndarray:
    """One preview image as HxWx3 uint8, made with the LoRA layers as they are now.

    Prompts are read as training reads captions (max_token_length), by the text encoder where it is: on the
    CPU when its outputs are cached for training."""
    pipe = StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                                   unet=model.unet, scheduler=make_sampler(sampler_name, model.noise_scheduler.config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    ids = tokenize(model.tokenizer, [spec.prompt, spec.negative], max_token_length).to(model.text_encoder.device)
    with autocast():
        embeds = encode_tokens(model.text_encoder, ids, clip_skip).to(device)
        generator = torch.Generator("cpu").manual_seed(spec.seed if spec.seed is not None else seed)
        image = pipe(prompt_embeds=embeds[:1], negative_prompt_embeds=embeds[1:], width=spec.width,
                     height=spec.height, num_inference_steps=spec.steps, guidance_scale=spec.scale,
                     generator=generator, output_type="np").images[0]
    return (np.nan_to_num(image) * 255).round().clip(0, 255).astype(np.uint8)
