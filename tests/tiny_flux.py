"""A tiny Flux.1 pipeline (dev or schnell) with random weights, for tests.

The folder has the layout, module names and configs of black-forest-labs/FLUX.1-dev / -schnell in diffusers
format (so LoRA targets, key names and family detection behave as on the real model) but weighs about 1 MB.
Nothing is downloaded: the CLIP tokenizer comes from trainer.families.tiny_sd, the T5 Unigram tokenizer is made
here from the same word list, without sentencepiece.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import T5Config, T5EncoderModel, T5Tokenizer

from trainer.families.tiny_sd import EOS, WORDS, build_text_encoder, make_clip_tokenizer

FLUX_VARIANTS = ("dev", "schnell")
CLIP_WIDTH = 32  # tiny_sd's CLIP-L width; Flux feeds its pooled output (768 wide in the real model)
T5_WIDTH = 64  # T5 d_model = joint_attention_dim (4096 in T5-XXL); unlike CLIP's so the two never get mixed up
T5_MAX_LENGTH = 512  # FluxPipeline refuses max_sequence_length above 512
LATENT_CHANNELS = 16
SAMPLE_SIZE = 64  # image side used by the tests; sides must be multiples of 16 (VAE 8 x 2x2 packing)
# Unigram log-probabilities: a whole word beats spelling it, so listed words are one piece.
_WORD_SCORE, _SPACE_SCORE, _CHAR_SCORE = -3.0, -2.0, -8.0


def build_t5_tokenizer() -> T5Tokenizer:
    """T5 layout: <pad>=0, </s>=1, <unk>=2, then "▁word" pieces, then single characters so other ASCII
    words still tokenize (letter by letter) instead of becoming <unk>."""
    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", _SPACE_SCORE)]
    words = [("▁" + word, _WORD_SCORE) for word in dict.fromkeys(WORDS)]
    chars = [(char, _CHAR_SCORE) for char in string.ascii_letters + string.digits + string.punctuation]
    # No <extra_id_N> sentinels: they only matter for T5's span-corruption pretraining.
    return T5Tokenizer(vocab=specials + words + chars, extra_ids=0, model_max_length=T5_MAX_LENGTH)


def build_t5_encoder(tokenizer: T5Tokenizer) -> T5EncoderModel:
    """T5 v1.1 (gated-gelu, untied embeddings, relative attention) at 2 layers."""
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=T5_WIDTH,
        d_kv=16,
        d_ff=2 * T5_WIDTH,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5EncoderModel(config)


def build_flux_transformer(guidance: bool, num_single_layers: int) -> FluxTransformer2DModel:
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * LATENT_CHANNELS,  # latents packed 2x2 into tokens
        num_layers=1,
        num_single_layers=num_single_layers,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=T5_WIDTH,
        pooled_projection_dim=CLIP_WIDTH,
        guidance_embeds=guidance,  # dev is guidance-distilled; schnell is not
        axes_dims_rope=(4, 6, 6),  # sums to attention_head_dim, as (16, 56, 56) sums to 128
    )


def build_flux_vae() -> AutoencoderKL:
    """Flux's ae: 16 latent channels, factor 8 (four levels), no quant convs, its scale and shift."""
    return AutoencoderKL(
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=8,
        sample_size=SAMPLE_SIZE,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def build_flux_scheduler(variant: str) -> FlowMatchEulerDiscreteScheduler:
    """The scheduler configs shipped with FLUX.1-dev (resolution-dependent shift) and -schnell (none)."""
    dev = variant == "dev"
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0 if dev else 1.0,
        use_dynamic_shifting=dev,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def build_tiny_flux(path: Path, variant: str = "dev", num_single_layers: int = 1, seed: int = 0) -> Path:
    """Builds a tiny Flux.1 pipeline (1 double block, `num_single_layers` single blocks) and saves it at `path`."""
    if variant not in FLUX_VARIANTS:
        raise ValueError(f"unknown tiny Flux variant {variant!r}, expected one of {FLUX_VARIANTS}")
    tokenizer, tokenizer_2 = make_clip_tokenizer(EOS), build_t5_tokenizer()
    # Reseed before each module so one module's size never shifts another's weights.
    torch.manual_seed(seed)
    text_encoder = build_text_encoder("sd1", tokenizer)  # CLIP-L, as SD1.5's
    torch.manual_seed(seed)
    text_encoder_2 = build_t5_encoder(tokenizer_2)
    torch.manual_seed(seed)
    transformer = build_flux_transformer(variant == "dev", num_single_layers)
    torch.manual_seed(seed)
    vae = build_flux_vae()
    pipe = FluxPipeline(
        scheduler=build_flux_scheduler(variant),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    pipe.save_pretrained(path)
    return Path(path)
