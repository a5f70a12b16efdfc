"""Tiny Stable Diffusion pipelines with random weights, for tests and the offline demo.

The folders have the layout and module names of real SD1.5 / SD2.x-768-v checkpoints (so LoRA targets,
key names and family detection behave as on a real model) but weigh a few MB and run on a CPU in
milliseconds. Nothing is downloaded: the CLIP BPE tokenizer is made here from a small word list.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

VARIANTS = ("sd1", "sd2v")
# Text width = UNet cross_attention_dim; different per variant so family detection can tell them apart.
CROSS_ATTENTION_DIM = {"sd1": 32, "sd2v": 64}
# Default image side (UNet sample_size * VAE factor 8), in the ratio of real SD1.5 (512) to SD2-v (768).
SAMPLE_SIZE = {"sd1": 64, "sd2v": 96}
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# Words the BPE merges are learned from, so captions of the demo data and typical test prompts
# tokenize into whole words; anything else still tokenizes, byte by byte.
_WORDS = """a an the of on in with and at by for to is photo picture painting drawing sketch render
portrait landscape style art artwork masterpiece best quality high low detailed simple small large big
red green blue yellow white black orange purple pink gray grey brown cyan magenta gold silver
circle square triangle star shape shapes background foreground center corner border outline solid
woman man girl boy person cat dog bird tree flower house car sky sun moon water mountain city night day
sks ohwx lora danlu token trigger character object furnace pill""".split()


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's byte -> printable unicode map (the GPT-2 table), in CLIP's vocabulary order.

    Printable bytes map to themselves and come first (so "!" gets id 0, SD2's pad id); the other
    bytes follow, mapped to chr(256 + n).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def _learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Plain BPE learning until every word is one symbol; ties broken by the pair itself (deterministic)."""
    # Words as CLIP's BPE sees them: last symbol carries the end-of-word suffix.
    corpus = Counter(tuple(w[:-1]) + (w[-1] + "</w>",) for w in words)
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, freq in corpus.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += freq
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        corpus = Counter({_apply_merge(s, best): f for s, f in corpus.items()})
    return merges


def _apply_merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if symbols[i : i + 2] == pair:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def write_clip_bpe_files(folder: Path) -> Path:
    """Writes vocab.json + merges.txt in the layout of openai/clip-vit-large-patch14.

    Ids: 256 byte symbols, the same with "</w>", the merged symbols, then <|startoftext|> and
    <|endoftext|> last, so EOS has the highest id as in real CLIP (its pooled output relies on it).
    """
    chars = list(bytes_to_unicode().values())
    merges = _learn_merges(_WORDS)
    symbols = chars + [c + "</w>" for c in chars] + [a + b for a, b in merges] + [BOS, EOS]
    vocab = {s: i for i, s in enumerate(dict.fromkeys(symbols))}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def build_tokenizer(variant: str) -> CLIPTokenizer:
    # SD2's OpenCLIP tokenizer pads with "!" (id of byte "!" = 0); SD1.5 pads with <|endoftext|>.
    pad = "!" if variant == "sd2v" else EOS
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_clip_bpe_files(Path(tmp))
        return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77, pad_token=pad)


def build_text_encoder(variant: str, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=CROSS_ATTENTION_DIM[variant],
        intermediate_size=2 * CROSS_ATTENTION_DIM[variant],
        num_hidden_layers=4,  # enough for clip_skip 1..3
        num_attention_heads=4,
        max_position_embeddings=77,
        # SD1.5 uses OpenAI CLIP-L (quick_gelu); SD2 uses OpenCLIP ViT-H (gelu).
        hidden_act="gelu" if variant == "sd2v" else "quick_gelu",
        projection_dim=CROSS_ATTENTION_DIM[variant],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def build_unet(variant: str) -> UNet2DConditionModel:
    """Two levels in SD's pattern: attention in the first down / last up block, none in the deepest."""
    sd2 = variant == "sd2v"
    return UNet2DConditionModel(
        sample_size=SAMPLE_SIZE[variant] // 8,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CROSS_ATTENTION_DIM[variant],
        norm_num_groups=16,
        # diffusers' legacy name: these are head counts. SD2 configs give a list, SD1.5 an int.
        attention_head_dim=[2, 4] if sd2 else 2,
        use_linear_projection=sd2,  # SD2: proj_in/proj_out are Linear; SD1.5: 1x1 Conv2d
        upcast_attention=sd2,  # as in SD2.1-v
    )


def build_vae(variant: str) -> AutoencoderKL:
    # Four levels as in real SD so the VAE scale factor is 8.
    return AutoencoderKL(
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=SAMPLE_SIZE[variant],
        scaling_factor=0.18215,
    )


def build_scheduler(variant: str) -> PNDMScheduler | DDIMScheduler:
    """The scheduler configs shipped with runwayml SD1.5 (PNDM) and stabilityai SD2.1 768-v (DDIM)."""
    common = dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        set_alpha_to_one=False,
        steps_offset=1,
    )
    if variant == "sd2v":
        return DDIMScheduler(**common, clip_sample=False, prediction_type="v_prediction")
    scheduler = PNDMScheduler(**common, skip_prk_steps=True, prediction_type="epsilon")
    # SD1.5's file also says clip_sample false, which PNDM ignores but a DDPM/DDIM loaded from it needs.
    scheduler.register_to_config(clip_sample=False)
    return scheduler


def build_tiny_sd(path: Path, variant: str = "sd1", seed: int = 0) -> Path:
    """Builds a tiny SD pipeline with random weights and saves it as a diffusers folder at `path`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown tiny variant {variant!r}, expected one of {VARIANTS}")
    tokenizer = build_tokenizer(variant)
    # Reseed before each module so one module's size never shifts another's weights.
    torch.manual_seed(seed)
    text_encoder = build_text_encoder(variant, tokenizer)
    torch.manual_seed(seed)
    unet = build_unet(variant)
    torch.manual_seed(seed)
    vae = build_vae(variant)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=build_scheduler(variant),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    return Path(path)
