"""Stable Diffusion 1.x / 2.x: CLIP text encoder, UNet, VAE, DDPM noise schedule."""

from __future__ import annotations

from dataclasses import dataclass
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from ..config import TrainConfig
from ..errors import UserError

# kohya "LierLa": the linear / 1x1 layers of the UNet's transformer blocks, the text encoder's attention + MLP.
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
UNET_PREFIX, TEXT_ENCODER_PREFIX = "lora_unet", "lora_te"


@dataclass
class SDModel:
    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    noise_scheduler: DDPMScheduler
    v2: bool
    v_parameterization: bool

    @property
    def base_model_version(self) -> str:
        return "sd_v2" if self.v2 else "sd_v1"


def load_sd(config: TrainConfig, dtype: torch.dtype) -> SDModel:
    """Frozen parts in `dtype`; the VAE always in fp32 (fp16 VAEs overflow into NaN latents)."""
    source = config.pretrained_model_name_or_path
    try:
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", dtype=dtype)
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype)
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=torch.float32)
        noise_scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler")
    except (OSError, ValueError) as exc:
        raise UserError(f"pretrained_model_name_or_path: cannot load '{source}': {_first_line(exc)}",
                        "give a diffusers model folder (with unet/, vae/, text_encoder/, tokenizer/, "
                        "scheduler/) or a Hugging Face repo id while online") from None
    detected_v2 = text_encoder.config.hidden_act == "gelu"  # OpenCLIP ViT-H; SD1's CLIP uses quick_gelu
    if config.v2 is not None and config.v2 != detected_v2:
        raise UserError(f"v2: set to {config.v2}, but '{source}' is an SD{'2' if detected_v2 else '1'}.x model",
                        "leave v2 empty to detect it")
    if config.clip_skip > text_encoder.config.num_hidden_layers:
        raise UserError(f"clip_skip: {config.clip_skip} is more than the text encoder's "
                        f"{text_encoder.config.num_hidden_layers} layers", "use 1 or 2")
    v_pred = config.v_parameterization
    if v_pred is None:
        v_pred = noise_scheduler.config.prediction_type == "v_prediction"
    # sd-scripts trains and samples with clip_sample off; previews inherit this config.
    noise_scheduler.register_to_config(prediction_type="v_prediction" if v_pred else "epsilon", clip_sample=False)
    vae.requires_grad_(False).eval()
    return SDModel(tokenizer, text_encoder, unet, vae, noise_scheduler, detected_v2, v_pred)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def text_encoder_module_root(text_encoder: CLIPTextModel) -> str:
    """kohya's names (and A1111/ComfyUI's loaders) use transformers 4 paths, text_model.encoder...;
    transformers 5 dropped the text_model level."""
    return "" if hasattr(text_encoder, "text_model") else "text_model."


# A CLIP pass reads 77 positions: BOS, 75 caption tokens, then EOS or padding. Longer captions
# (max_token_length 150 or 225) are read in windows of 75 tokens, as sd-scripts does.
WINDOW_TOKENS = 75


def tokenize(tokenizer: CLIPTokenizer, captions: list[str], max_token_length: int | None = None) -> torch.Tensor:
    """(batch, windows * 77) token ids: max_token_length + 2 tokens cut into 77-token windows like sd-scripts."""
    window = tokenizer.model_max_length
    if (max_token_length or WINDOW_TOKENS) <= WINDOW_TOKENS:
        return tokenizer(captions, padding="max_length", max_length=window, truncation=True,
                         return_tensors="pt").input_ids
    ids = tokenizer(captions, padding="max_length", max_length=max_token_length + 2, truncation=True,
                    return_tensors="pt").input_ids
    starts = range(1, max_token_length + 1, window - 2)
    return torch.cat([_window(tokenizer, ids, start, window) for start in starts], dim=1)


def _window(tokenizer: CLIPTokenizer, ids: torch.Tensor, start: int, window: int) -> torch.Tensor:
    """BOS + the caption tokens [start, start + 75) + the full sequence's last token (EOS or pad)."""
    chunk = torch.cat([ids[:, :1], ids[:, start:start + window - 2], ids[:, -1:]], dim=1)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if pad != eos:  # SD2 pads with "!": every window must still hold an EOS, as sd-scripts ensures
        last_text = chunk[:, -2]
        chunk[(last_text != eos) & (last_text != pad), -1] = eos  # text runs to the window's end
        chunk[chunk[:, 1] == pad, 1] = eos  # an empty window reads BOS EOS pad ...
    return chunk


def encode_tokens(text_encoder: CLIPTextModel, input_ids: torch.Tensor, clip_skip: int) -> torch.Tensor:
    """Hidden states for the UNet: 77 tokens, or 75 * windows + 2 with a longer max_token_length.

    Each 77-token window is encoded on its own (clip_skip applies per window); the windows' BOS/EOS states
    are dropped except the first BOS and the last window's final state, as sd-scripts splices them.
    """
    window = _unwrap(text_encoder).config.max_position_embeddings
    batch, windows = input_ids.shape[0], input_ids.shape[1] // window
    hidden = _encode_window(text_encoder, input_ids.reshape(batch * windows, window), clip_skip)
    hidden = hidden.reshape(batch, windows * window, hidden.shape[-1])
    if windows == 1:
        return hidden
    inner = [hidden[:, w * window + 1:(w + 1) * window - 1] for w in range(windows)]
    return torch.cat([hidden[:, :1], *inner, hidden[:, -1:]], dim=1)


def _encode_window(text_encoder: CLIPTextModel, input_ids: torch.Tensor, clip_skip: int) -> torch.Tensor:
    """sd-scripts' clip_skip: the hidden state clip_skip layers from the end, through the final layer norm."""
    if clip_skip == 1:
        return text_encoder(input_ids)[0]
    hidden = text_encoder(input_ids, output_hidden_states=True).hidden_states[-clip_skip]
    unwrapped = _unwrap(text_encoder)
    return getattr(unwrapped, "text_model", unwrapped).final_layer_norm(hidden)


def _unwrap(text_encoder: CLIPTextModel) -> CLIPTextModel:
    return getattr(text_encoder, "module", text_encoder)  # under DDP the model is .module


def training_target(scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor,
                    timesteps: torch.Tensor) -> torch.Tensor:
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return noise
