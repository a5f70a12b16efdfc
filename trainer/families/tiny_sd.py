"""The SD families' tiny test models: SD1 / SD2-v / SDXL pipelines with random weights, for tests and the
offline demo.

The folders have the layout and module names of real SD1.5 / SD2.x-768-v / SDXL checkpoints (so LoRA targets,
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
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

VARIANTS = ("sd1", "sd2v", "sdxl")
# SDXL's two text encoders, as CLIP-L (768) and OpenCLIP bigG (1280) shrunk: widths differ, as in the real model.
SDXL_TEXT_DIMS = (32, 64)
# Projection of text_encoder_2's pooled output, fed to the UNet's add_embedding with the 6 size/crop numbers.
SDXL_PROJECTION_DIM = 32
SDXL_TIME_EMBED_DIM = 8  # addition_time_embed_dim (256 in SDXL)
# Text width = UNet cross_attention_dim; different per variant so family detection can tell them apart.
# SDXL's is the concatenation of its two text encoders' hidden states.
CROSS_ATTENTION_DIM = {"sd1": 32, "sd2v": 64, "sdxl": sum(SDXL_TEXT_DIMS)}
# Default image side (UNet sample_size * VAE factor 8), in the ratio of real SD1.5 (512), SD2-v (768), SDXL (1024).
SAMPLE_SIZE = {"sd1": 64, "sd2v": 96, "sdxl": 128}
VAE_SCALING_FACTOR = {"sd1": 0.18215, "sd2v": 0.18215, "sdxl": 0.13025}
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# Words the BPE merges are learned from, so captions of the demo data and typical test prompts
# tokenize into whole words; anything else still tokenizes, byte by byte.
WORDS = """a an the of on in with and at by for to is photo picture painting drawing sketch render
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
    merges = _learn_merges(WORDS)
    symbols = chars + [c + "</w>" for c in chars] + [a + b for a, b in merges] + [BOS, EOS]
    vocab = {s: i for i, s in enumerate(dict.fromkeys(symbols))}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def make_clip_tokenizer(pad: str) -> CLIPTokenizer:
    """CLIP BPE tokenizer of the word list; OpenCLIP ones (SD2, SDXL's 2nd) pad with "!" (id 0), OpenAI's with EOS."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_clip_bpe_files(Path(tmp))
        return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77, pad_token=pad)


def build_tokenizer(variant: str) -> CLIPTokenizer:
    """The (first) tokenizer of a variant: SD2's is OpenCLIP's; SD1.5's and SDXL's first are CLIP-L's."""
    return make_clip_tokenizer("!" if variant == "sd2v" else EOS)


def clip_text_config(tokenizer: CLIPTokenizer, width: int, openclip: bool, projection_dim: int) -> CLIPTextConfig:
    """A 4-layer CLIP text config (enough for clip_skip 1..3) of the given width."""
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=77,
        # OpenAI CLIP-L uses quick_gelu; OpenCLIP ViT-H / bigG use gelu.
        hidden_act="gelu" if openclip else "quick_gelu",
        projection_dim=projection_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_text_encoder(variant: str, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """The (first) text encoder: SD1.5's CLIP-L, SD2's OpenCLIP ViT-H, SDXL's CLIP-L."""
    width = SDXL_TEXT_DIMS[0] if variant == "sdxl" else CROSS_ATTENTION_DIM[variant]
    return CLIPTextModel(clip_text_config(tokenizer, width, variant == "sd2v", width))


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


def build_sdxl_unet() -> UNet2DConditionModel:
    """SDXL's UNet shrunk: 3 levels, no attention in the first, layers_per_block 2 (kohya's SDXL LoRA names
    number LDM input_blocks 1 + 3 * level + layer), text_time added embedding, linear proj_in/proj_out."""
    return UNet2DConditionModel(
        sample_size=SAMPLE_SIZE["sdxl"] // 8,
        block_out_channels=(16, 32, 32),  # SDXL doubles (320, 640, 1280); kept flat to stay small
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        # SDXL has (1, 2, 10) transformer layers; two in the deeper levels keeps transformer_blocks.1 names.
        transformer_layers_per_block=(1, 2, 2),
        cross_attention_dim=CROSS_ATTENTION_DIM["sdxl"],
        norm_num_groups=8,
        attention_head_dim=[1, 2, 2],  # head counts (legacy name); head size 16, SDXL's 64 shrunk
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=SDXL_TIME_EMBED_DIM,
        addition_embed_type_num_heads=64,
        # pooled text projection + 6 numbers (original size, crop top-left, target size), each time-embedded
        projection_class_embeddings_input_dim=SDXL_PROJECTION_DIM + 6 * SDXL_TIME_EMBED_DIM,
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
        scaling_factor=VAE_SCALING_FACTOR[variant],
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


def build_sdxl_scheduler() -> EulerDiscreteScheduler:
    """The scheduler config shipped with stabilityai/stable-diffusion-xl-base-1.0."""
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        timestep_spacing="leading",
        steps_offset=1,
    )
    # Keys of SDXL's file that Euler ignores but a DDPM/DDIM loaded from the same folder needs.
    scheduler.register_to_config(clip_sample=False, set_alpha_to_one=False, skip_prk_steps=True, sample_max_value=1.0)
    return scheduler


def build_tiny_sdxl(path: Path, seed: int = 0) -> Path:
    """Tiny SDXL: CLIP-L-like text_encoder (EOS pad) + OpenCLIP-bigG-like text_encoder_2 with projection ("!" pad)."""
    tokenizer, tokenizer_2 = make_clip_tokenizer(EOS), make_clip_tokenizer("!")
    torch.manual_seed(seed)
    text_encoder = build_text_encoder("sdxl", tokenizer)
    torch.manual_seed(seed)
    config_2 = clip_text_config(tokenizer_2, SDXL_TEXT_DIMS[1], openclip=True, projection_dim=SDXL_PROJECTION_DIM)
    text_encoder_2 = CLIPTextModelWithProjection(config_2)
    torch.manual_seed(seed)
    unet = build_sdxl_unet()
    torch.manual_seed(seed)
    vae = build_vae("sdxl")
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=build_sdxl_scheduler(),
        add_watermarker=False,
    )
    pipe.save_pretrained(path)
    return Path(path)


def build_tiny_sd(path: Path, variant: str = "sd1", seed: int = 0) -> Path:
    """Builds a tiny SD pipeline with random weights and saves it as a diffusers folder at `path`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown tiny variant {variant!r}, expected one of {VARIANTS}")
    if variant == "sdxl":
        return build_tiny_sdxl(path, seed)
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
