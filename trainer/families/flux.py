"""Flux.1 dev and schnell: CLIP-L (pooled) and T5-XXL text encoders, a rectified-flow transformer on packed
16-channel latents, trained as sd-scripts' flux_train_network does (flux_math.py holds the formulas)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
from peft import get_peft_model_state_dict, set_peft_model_state_dict

from trainer.adapters.layers import ADAPTER, kohya_state_dict, load_kohya_weights, lora_layers
from trainer.common.errors import UserError
from trainer.families import flux_math
from trainer.families.base import AdapterPart, Conditioning, ModelFamily, rank_and_alpha
from trainer.families.flux_names import (
    CLIP_PREFIX,
    FLUX_PREFIX,
    FLUX_TARGETS,
    T5_PREFIX,
    T5_TARGETS,
    diffusers_flux_state_dict,
    kohya_flux_state_dict,
    peft_state_from_kohya_flux,
)
from trainer.families.sd import TEXT_ENCODER_TARGETS, text_encoder_rename
from trainer.training.loss import THRESHOLD_LOSSES, elementwise_loss, weighted_mean

CLIP_TOKENS = 77
# sd-scripts' T5 lengths: schnell was distilled with 256 tokens, dev with 512.
T5_TOKENS = {"dev": 512, "schnell": 256}
FUSED_MODULE = re.compile(r"_(img_attn_qkv|txt_attn_qkv|linear1)\.")  # kohya modules that fuse several
PACKED_PIXELS = 16  # VAE factor 8 x 2x2 patches
SD_ONLY = "does not apply to Flux.1 (flow matching has no DDPM noise schedule)"


class FluxFamily(ModelFamily):
    name = "flux"
    default_guidance = 3.5

    def guidance(self, spec) -> float:
        return super().guidance(spec) if spec.guidance is None else spec.guidance
    unsupported = {
        "v2": "Flux.1 is not an SD2.x model", "v_parameterization": "Flux.1 predicts a velocity by design",
        "clip_skip": "Flux.1 reads CLIP-L's pooled output, which clip_skip does not change",
        "max_token_length": "Flux.1 reads 77 CLIP tokens; use t5xxl_max_token_length for T5",
        "vae": "for Flux.1 give the autoencoder as ae", **dict.fromkeys(
            ("min_snr_gamma", "debiased_estimation_loss", "scale_v_pred_loss_like_noise_pred", "v_pred_like_loss",
             "zero_terminal_snr", "noise_offset", "adaptive_noise_scale", "multires_noise_iterations",
             "ip_noise_gamma", "min_timestep", "max_timestep"), SD_ONLY + "; use timestep_sampling and "
                                                                 "weighting_scheme"),
        "sample_sampler": "Flux.1 previews use the flow-matching Euler sampler",
        "xformers": "Flux.1 uses PyTorch's SDPA attention", "sdpa": "Flux.1 always uses PyTorch's SDPA attention",
        "network_type": "Flux.1 trains lora only: its LoRA files fuse q/k/v as ComfyUI and Forge read them, a layout "
                        "LoCon/LoHa/LoKr/DyLoRA weights cannot be written in exactly",
    }

    @property
    def variant(self) -> str:
        return "dev" if self.denoiser.config.guidance_embeds else "schnell"

    def metadata(self) -> dict[str, str]:
        # sd-scripts' module name for Flux LoRAs, which tools reading ss_network_module expect
        return {**super().metadata(), "ss_network_module": "networks.lora_flux", "ss_flux_variant": self.variant}

    @property
    def t5_tokens(self) -> int:
        return self.config.t5xxl_max_token_length or T5_TOKENS[self.variant]

    def resolved(self) -> dict[str, Any]:
        return {**super().resolved(), "t5xxl_max_token_length": self.t5_tokens}

    def prepare(self) -> list[str]:
        config = self.config
        sides = [config.bucket_reso_steps, *config.resolution_wh]
        if any(side % PACKED_PIXELS for side in sides):
            raise UserError(f"resolution {config.resolution} / bucket_reso_steps {config.bucket_reso_steps}: Flux.1 "
                            f"packs 2x2 latent patches, so image sides must be multiples of {PACKED_PIXELS}",
                            "use bucket_reso_steps 64 and a resolution such as 512 or 1024",
                            zh=f"resolution {config.resolution} / bucket_reso_steps {config.bucket_reso_steps}："
                            f"Flux.1 把 2x2 的 latent 打包处理，图片边长必须是 {PACKED_PIXELS} 的倍数",
                            hint_zh="请用 bucket_reso_steps 64，分辨率取 512 或 1024 这样的值")
        if config.loss_type in THRESHOLD_LOSSES and config.huber_schedule == "snr":
            raise UserError(f"huber_schedule: snr {SD_ONLY}", "use huber_schedule constant or exponential",
                            zh="huber_schedule：snr 不适用于 Flux.1（flow matching 没有 DDPM 噪声调度）",
                            hint_zh="请用 huber_schedule constant 或 exponential")
        return []

    def set_attention(self, sdpa: bool, xformers: bool) -> None:
        """diffusers' Flux attention is SDPA already; the other choices are refused by `unsupported`."""

    # --- LoRA parts ---------------------------------------------------------------------------------------
    def denoiser_part(self) -> AdapterPart:
        return AdapterPart("transformer", self.denoiser, FLUX_TARGETS, FLUX_PREFIX, self.config.effective_unet_lr)

    def text_encoder_parts(self) -> list[AdapterPart]:
        clip, t5 = self.text_encoders
        lrs = self.config.text_encoder_lrs(2)
        parts = [AdapterPart("text_encoder", clip, TEXT_ENCODER_TARGETS, CLIP_PREFIX, lrs[0], text_encoder_rename(clip))]
        if self.config.train_t5xxl:
            parts.append(AdapterPart("text_encoder_2", t5, T5_TARGETS, T5_PREFIX, lrs[1]))
        return parts

    def export_tensors(self, alpha: float) -> dict[str, torch.Tensor]:
        """The transformer in the kohya/ComfyUI layout (BFL names, fused q/k/v) or, with save_lora_format
        diffusers, in diffusers' names; text encoders as kohya's."""
        tensors: dict[str, torch.Tensor] = {}
        for part in self.trained_parts():
            if part.module is self.denoiser:
                state = get_peft_model_state_dict(part.module, adapter_name=ADAPTER)
                convert = diffusers_flux_state_dict if self.config.save_lora_format == "diffusers" \
                    else kohya_flux_state_dict
                tensors.update(convert(state, alpha))
            else:
                tensors.update(kohya_state_dict(part.module, part.prefix, alpha, part.rename))
        return tensors

    def network_file_shape(self, weights: dict[str, torch.Tensor]) -> tuple[int, float] | None:
        """From a module that is not fused: a fused one (q/k/v, linear1) holds n x rank with n x alpha."""
        return rank_and_alpha({k: v for k, v in weights.items() if not FUSED_MODULE.search(k)})

    def load_network_weights(self, weights: dict[str, torch.Tensor]) -> set[str]:
        used: set[str] = set()
        for part in self.trained_parts():
            if part.module is not self.denoiser:
                used |= load_kohya_weights(part.module, weights, part.prefix, part.rename)
                continue
            layer = next(iter(lora_layers(part.module).values()))
            rank = layer.r[ADAPTER]
            try:
                state, flux_used = peft_state_from_kohya_flux(weights, rank, layer.scaling[ADAPTER] * rank)
            except ValueError as exc:
                raise UserError(f"network_weights: {exc}", "continue from a LoRA saved by Danlu or sd-scripts",
                                zh=f"network_weights：无法读取：{exc}",
                                hint_zh="请从丹炉或 sd-scripts 保存的 LoRA 继续训练") from None
            set_peft_model_state_dict(part.module, state, adapter_name=ADAPTER)
            used |= flux_used
        return used

    # --- a training step ----------------------------------------------------------------------------------
    def encode_text(self, captions: list[str]) -> Conditioning:
        """CLIP-L's pooled output and T5-XXL's hidden states (padding masked with apply_t5_attn_mask)."""
        c, config = self.components, self.config
        clip_ids = c["tokenizer"](captions, padding="max_length", max_length=CLIP_TOKENS, truncation=True,
                                  return_tensors="pt").input_ids
        t5 = c["tokenizer_2"](captions, padding="max_length", max_length=self.t5_tokens, truncation=True,
                              return_tensors="pt")
        with torch.set_grad_enabled(config.train_text_encoder and torch.is_grad_enabled()):
            pooled = self.runners["text_encoder"](clip_ids.to(c["text_encoder"].device)).pooler_output
        with torch.set_grad_enabled(config.train_t5xxl and config.train_text_encoder and torch.is_grad_enabled()):
            device = c["text_encoder_2"].device
            mask = t5.attention_mask.to(device) if config.apply_t5_attn_mask else None
            hidden = self.runners["text_encoder_2"](t5.input_ids.to(device), attention_mask=mask)[0]
            if mask is not None:  # the transformer takes no text mask: padded positions carry zeros instead
                hidden = hidden * mask.unsqueeze(-1).to(hidden.dtype)
        return {"t5": hidden, "pooled": pooled}

    def text_cache_stamp(self) -> dict[str, str]:
        return {**super().text_cache_stamp(), "t5xxl_max_token_length": str(self.t5_tokens),
                "apply_t5_attn_mask": str(self.config.apply_t5_attn_mask)}

    def loss(self, latents: torch.Tensor, cond: Conditioning, data: dict) -> torch.Tensor:
        config, draws = self.config, data["draws"]  # drawn for the global batch, this process's rows kept
        _, _, height, width = latents.shape
        noise = draws.randn(latents.shape[1:], latents)
        sigmas = draws.rows(flux_math.sample_sigmas(
            config.timestep_sampling, draws.size, sigmoid_scale=config.sigmoid_scale,
            discrete_flow_shift=config.discrete_flow_shift, image_seq_len=flux_math.image_seq_len(height, width),
            weighting_scheme=config.weighting_scheme, logit_mean=config.logit_mean, logit_std=config.logit_std,
            mode_scale=config.mode_scale, device=latents.device, generator=draws.generator("cpu")))
        noisy = flux_math.noisy_model_input(latents, noise, sigmas)
        prediction = self.predict(noisy, sigmas, cond)
        prediction, weighting = flux_math.apply_prediction_type(config.model_prediction_type, prediction, noisy,
                                                                sigmas, config.weighting_scheme)
        target = flux_math.flow_target(latents, noise)
        per_element = elementwise_loss(config.loss_type, prediction.float(), target.float(),
                                       self._huber_threshold(sigmas))
        if weighting is not None:
            per_element = per_element * weighting.float()
        return weighted_mean(config, per_element, data["is_reg"])

    def predict(self, noisy: torch.Tensor, sigmas: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The transformer's velocity for unpacked latents (B, 16, h, w), packed into 2x2 patches around the call."""
        batch, channels, height, width = noisy.shape
        packed = FluxPipeline._pack_latents(noisy, batch, channels, height, width)
        image_ids = FluxPipeline._prepare_latent_image_ids(batch, height // 2, width // 2, noisy.device, noisy.dtype)
        text = cond["t5"].to(noisy.device)
        text_ids = torch.zeros(text.shape[1], 3, device=noisy.device, dtype=noisy.dtype)
        guidance = torch.full((batch,), self.config.guidance_scale, device=noisy.device) \
            if self.denoiser.config.guidance_embeds else None
        output = self.runners["transformer"](hidden_states=packed, timestep=sigmas, guidance=guidance,
                                             pooled_projections=cond["pooled"].to(noisy.device),
                                             encoder_hidden_states=text, txt_ids=text_ids, img_ids=image_ids,
                                             return_dict=False)[0]
        vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return FluxPipeline._unpack_latents(output, height * vae_factor, width * vae_factor, vae_factor)

    def _huber_threshold(self, sigmas: torch.Tensor) -> torch.Tensor | None:
        """huber_c per sample, sd-scripts' constant or exponential schedule over timesteps = sigma * 1000."""
        config = self.config
        if config.loss_type not in THRESHOLD_LOSSES:
            return None
        if config.huber_schedule == "exponential":
            rate = -np.log(config.huber_c) / flux_math.NUM_TRAIN_TIMESTEPS
            return torch.exp(-rate * sigmas.float() * flux_math.NUM_TRAIN_TIMESTEPS) * config.huber_scale
        return torch.full(sigmas.shape, config.huber_c * config.huber_scale, device=sigmas.device)

    # --- previews -----------------------------------------------------------------------------------------
    @classmethod
    def assemble(cls, components: dict[str, Any]) -> FluxPipeline:
        return FluxPipeline(**components)

    def pipeline(self, sampler: str, text_encoders: bool = True) -> FluxPipeline:
        """Flux.1 has one sampler, the flow-matching Euler of its own scheduler config."""
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.components["scheduler"].config)
        return self.assemble(self.pipeline_components(scheduler, text_encoders))

    @torch.no_grad()
    def generate(self, spec, cond: Conditioning, uncond: Conditioning, seed: int, sampler: str) -> np.ndarray:
        """Flux.1 previews: the distilled guidance (--g as in sd-scripts, else --l, default 3.5) for dev; schnell
        has none; no negative."""
        pipe = self.pipeline(sampler, text_encoders=False)
        pipe.set_progress_bar_config(disable=True)
        device = self.denoiser.device
        width, height = max(16, spec.width // 16 * 16), max(16, spec.height // 16 * 16)
        packed = pipe(prompt_embeds=cond["t5"].to(device), pooled_prompt_embeds=cond["pooled"].to(device),
                      width=width, height=height, num_inference_steps=spec.steps, guidance_scale=self.guidance(spec),
                      generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
        return self.decode(FluxPipeline._unpack_latents(packed, height, width, pipe.vae_scale_factor))
