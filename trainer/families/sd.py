"""Stable Diffusion 1.x / 2.x: CLIP text encoder, UNet, VAE, DDPM noise schedule."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline
from transformers import CLIPTextModel, CLIPTokenizer

from trainer.adapters.layers import Rename
from trainer.adapters.types import NETWORK_TYPES
from trainer.common.errors import UserError
from trainer.config import TrainConfig
from trainer.families.base import AdapterPart, Conditioning, ModelFamily
from trainer.training.loss import training_loss
from trainer.training.noise import noisy_latents, prepare_scheduler
from trainer.training.sampling import make_sampler

# kohya "LierLa": the linear / 1x1 layers of the UNet's transformer blocks, the text encoder's attention + MLP.
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
# kohya "C3Lier" (LoCon) also adapts the ResnetBlock2D / Downsample2D / Upsample2D modules: their 3x3 convs at
# conv_dim, and the ResNets' 1x1 conv_shortcut and time_emb_proj linear at network_dim, as sd-scripts does.
UNET_RESNET_TARGETS = ["conv_shortcut", "time_emb_proj"]
UNET_CONV_TARGETS = ["conv1", "conv2", "downsamplers.0.conv", "upsamplers.0.conv"]


class SDFamily(ModelFamily):
    """SD1.x and SD2.x: one CLIP text encoder, a UNet predicting noise or v, the DDPM noise schedule."""

    unsupported = {key: "only Flux.1 uses it (the text encoders and VAE come with the base model)"
                   for key in ("ae", "clip_l", "t5xxl")}

    def __init__(self, config: TrainConfig, components: dict[str, Any]):
        super().__init__(config, components)
        self.noise_scheduler: DDPMScheduler = components["scheduler"]

    @classmethod
    def identify(cls, components: dict[str, Any]) -> str:
        return "sd2" if components["text_encoder"].config.hidden_act == "gelu" else "sd1"  # OpenCLIP-H vs CLIP-L

    @property
    def text_encoder(self) -> CLIPTextModel:
        return self.components["text_encoder"]

    @property
    def tokenizer(self) -> CLIPTokenizer:
        return self.components["tokenizer"]

    @property
    def v_parameterization(self) -> bool:
        return self.noise_scheduler.config.prediction_type == "v_prediction"

    def resolved(self) -> dict[str, Any]:
        return {**super().resolved(), "v2": self.name == "sd2", "v_parameterization": self.v_parameterization}

    def metadata(self) -> dict[str, str]:
        return {**super().metadata(), "ss_v2": str(self.name == "sd2"),
                "ss_v_parameterization": str(self.v_parameterization)}

    def prepare(self) -> list[str]:
        config, detected_v2 = self.config, self.name == "sd2"
        if config.network_module == "networks.lora_flux":
            raise UserError(f"network_module: networks.lora_flux is for Flux.1, and the base model is {self.label}",
                            "use network_module: networks.lora",
                            zh=f"network_module：networks.lora_flux 是给 Flux.1 用的，而底模是 {self.label}",
                            hint_zh="请用 network_module: networks.lora")
        if config.v2 is not None and config.v2 != detected_v2:
            raise UserError(f"v2: set to {config.v2}, but the base model is an {self.label} model",
                            "leave v2 empty to detect it", zh=f"v2：设成了 {config.v2}，但底模是 {self.label} 模型",
                            hint_zh="v2 留空即可自动识别")
        layers = self.text_encoders[-1].config.num_hidden_layers
        if config.clip_skip > layers:
            raise UserError(f"clip_skip: {config.clip_skip} is more than the text encoder's {layers} layers",
                            "use 1 or 2", zh=f"clip_skip：{config.clip_skip} 超过了文本编码器的 {layers} 层",
                            hint_zh="请用 1 或 2")
        v_pred = config.v_parameterization
        if v_pred is None:
            v_pred = self.noise_scheduler.config.prediction_type == "v_prediction"
        # sd-scripts trains and samples with clip_sample off; previews inherit this config.
        self.noise_scheduler.register_to_config(prediction_type="v_prediction" if v_pred else "epsilon",
                                                clip_sample=False)
        return prepare_scheduler(config, self.noise_scheduler)  # zero_terminal_snr, SNR table

    # --- LoRA parts ---------------------------------------------------------------------------------------
    def denoiser_part(self) -> AdapterPart:
        return AdapterPart("unet", self.denoiser, self.unet_targets(), self.spec.denoiser_prefix,
                           self.config.effective_unet_lr, conv_targets=self.conv_targets())

    def unet_targets(self) -> list[str]:
        return UNET_TARGETS + (UNET_RESNET_TARGETS if NETWORK_TYPES[self.config.network_type].convs else [])

    def conv_targets(self) -> list[str]:
        return UNET_CONV_TARGETS if NETWORK_TYPES[self.config.network_type].convs else []

    def text_encoder_parts(self) -> list[AdapterPart]:
        lr = self.config.text_encoder_lrs(1)[0]
        (encoder,) = self.spec.text_encoders
        return [AdapterPart("text_encoder", self.text_encoder, TEXT_ENCODER_TARGETS, encoder.lora_prefix, lr,
                            text_encoder_rename(self.text_encoder))]

    # --- a training step ----------------------------------------------------------------------------------
    def encode_text(self, captions: list[str]) -> Conditioning:
        encoder = self.runners["text_encoder"]
        ids = tokenize(self.tokenizer, captions, self.config.max_token_length).to(self.text_encoder.device)
        with torch.set_grad_enabled(self.config.train_text_encoder and torch.is_grad_enabled()):
            return {"hidden": encode_tokens(encoder, ids, self.config.clip_skip)}

    def text_cache_stamp(self) -> dict[str, str]:
        return {**super().text_cache_stamp(), "clip_skip": str(self.config.clip_skip),
                "max_token_length": str(self.config.max_token_length or WINDOW_TOKENS)}

    def loss(self, latents: torch.Tensor, cond: Conditioning, data: dict) -> torch.Tensor:
        config, scheduler = self.config, self.noise_scheduler
        noisy, noise, timesteps = noisy_latents(config, scheduler, latents, data["draws"])
        prediction = self.predict(noisy, timesteps, cond, data)
        target = training_target(scheduler, latents, noise, timesteps)
        return training_loss(config, scheduler, prediction, target, timesteps, data["is_reg"])

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning, data: dict) -> torch.Tensor:
        return self.runners["unet"](noisy, timesteps, cond["hidden"].to(noisy.device)).sample

    # --- previews -----------------------------------------------------------------------------------------
    @classmethod
    def assemble(cls, components: dict[str, Any]) -> StableDiffusionPipeline:
        return StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)

    def pipeline(self, sampler: str, text_encoders: bool = True):
        return self.assemble(self.pipeline_components(make_sampler(sampler, self.noise_scheduler.config),
                                                      text_encoders))

    @torch.no_grad()
    def generate(self, spec, cond: Conditioning, uncond: Conditioning, seed: int, sampler: str) -> np.ndarray:
        pipe = self.pipeline(sampler, text_encoders=False)
        pipe.set_progress_bar_config(disable=True)
        device = self.denoiser.device
        generator = torch.Generator("cpu").manual_seed(seed)
        latents = pipe(prompt_embeds=cond["hidden"].to(device), negative_prompt_embeds=uncond["hidden"].to(device),
                       width=spec.width, height=spec.height, num_inference_steps=spec.steps,
                       guidance_scale=self.guidance(spec), generator=generator, output_type="latent",
                       **self.pipeline_extras(cond, uncond, spec)).images
        return self.decode(latents)

    def pipeline_extras(self, cond: Conditioning, uncond: Conditioning, spec) -> dict[str, Any]:
        return {}


def text_encoder_rename(text_encoder: CLIPTextModel) -> Rename | None:
    """kohya's names (and A1111/ComfyUI's loaders) use transformers 4 paths, text_model.encoder...;
    transformers 5 dropped the text_model level."""
    return None if hasattr(text_encoder, "text_model") else lambda path: "text_model." + path


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
    window = unwrap(text_encoder).config.max_position_embeddings
    batch = input_ids.shape[0]
    hidden = _encode_window(text_encoder, input_ids.reshape(-1, window), clip_skip)
    return splice_windows(hidden, batch)


def splice_windows(hidden: torch.Tensor, batch: int) -> torch.Tensor:
    """(batch * windows, 77, width) window states -> (batch, 75 * windows + 2, width), as sd-scripts splices."""
    window = hidden.shape[1]
    windows = hidden.shape[0] // batch
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
    unwrapped = unwrap(text_encoder)
    return getattr(unwrapped, "text_model", unwrapped).final_layer_norm(hidden)


def unwrap(text_encoder: CLIPTextModel) -> CLIPTextModel:
    return getattr(text_encoder, "module", text_encoder)  # under DDP the model is .module


def training_target(scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor,
                    timesteps: torch.Tensor) -> torch.Tensor:
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return noise
