"""The one small interface the training loop sees of a model family (SD1/SD2, SDXL, Flux.1).

A family owns its model parts, how captions become conditioning, one training step's loss, preview images,
which layers carry LoRA and the key names its LoRA files use. The loop never asks which family it runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from trainer.adapters.layers import Rename
from trainer.adapters.types import NETWORK_TYPES
from trainer.common.errors import UserError
from trainer.config import TrainConfig
from trainer.families.table import FAMILIES, Family

Conditioning = dict[str, torch.Tensor]  # what the text encoders give the denoiser, per caption batch


@dataclass
class AdapterPart:
    """A model part that carries LoRA: its optimizer group, peft targets and kohya key prefix."""

    name: str  # optimizer group, `lrs` key and runner name: unet, transformer, text_encoder, text_encoder_2
    module: torch.nn.Module
    targets: list[str] | str  # peft target_modules: name suffixes, or one regular expression
    prefix: str  # kohya: lora_unet, lora_te, lora_te1, lora_te2
    lr: float
    rename: Rename | None = None  # module path -> the path kohya's names use, where they differ
    conv_targets: list[str] = field(default_factory=list)  # conv layers trained at conv_dim (LoCon, LoHa, LoKr)


class ModelFamily(ABC):
    name: str  # its row in the family table (table.py)
    # Config keys that mean nothing for this family: key -> why. Set to anything but the default, they are refused.
    unsupported: dict[str, str] = {}

    def __init__(self, config: TrainConfig, components: dict[str, Any]):
        self.name = self.identify(components)
        self.config = config
        self.components = components
        # What a training step calls: the bare modules, or their DDP wrappers once the loop prepared them.
        self.runners: dict[str, torch.nn.Module] = {name: components[name]
                                                    for name in (self.denoiser_name, *self.text_encoder_names)}

    @classmethod
    def identify(cls, components: dict[str, Any]) -> str:
        """Which row of the table these components are (one class may serve several, as SD1 and SD2)."""
        return cls.name

    @property
    def spec(self) -> Family:
        return FAMILIES[self.name]

    # --- parts ----------------------------------------------------------------------------------------
    @property
    def denoiser_name(self) -> str:
        return self.spec.denoiser

    @property
    def text_encoder_names(self) -> tuple[str, ...]:
        return tuple(encoder.component for encoder in self.spec.text_encoders)

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.components[self.denoiser_name]

    @property
    def vae(self) -> torch.nn.Module:
        return self.components["vae"]

    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        return [self.components[name] for name in self.text_encoder_names]

    def trained_parts(self) -> list[AdapterPart]:
        """The parts this config trains, in optimizer-group order (denoiser first)."""
        config, parts = self.config, []
        if config.train_unet:
            parts.append(self.denoiser_part())
        if config.train_text_encoder:
            parts += self.text_encoder_parts()
        return parts

    @abstractmethod
    def denoiser_part(self) -> AdapterPart: ...

    @abstractmethod
    def text_encoder_parts(self) -> list[AdapterPart]: ...

    # --- facts ------------------------------------------------------------------------------------------
    @property
    def base_model_version(self) -> str:
        return self.spec.base_model_version

    def resolved(self) -> dict[str, Any]:
        """Config values this model decides (written to the run's config.yaml)."""
        return {"model_family": self.name}

    def metadata(self) -> dict[str, str]:
        return {"ss_base_model_version": self.base_model_version}

    def check_options(self) -> None:
        """Refuse config keys that have no meaning for this family, naming the key and why."""
        for key, reason in self.unsupported.items():
            value = getattr(self.config, key)
            if value != TrainConfig.model_fields[key].default:
                default = TrainConfig.model_fields[key].default
                raise UserError(f"{key}: {reason}", f"remove {key} (or set it back to {default!r}) to train "
                                f"{self.label}", zh=f"{key}：{self.label} 用不了这个参数（{reason}）",
                                hint_zh=f"训练 {self.label} 请去掉 {key}（或改回 {default!r}）")
        self._check_blocks_to_swap()
        layouts = self.spec.lora_layouts
        if self.config.save_lora_format not in layouts:
            raise UserError(f"save_lora_format: {self.label} LoRAs are saved in {' or '.join(layouts)} layout "
                            "(diffusers loads kohya's layout too)", f"set save_lora_format to {layouts[0]}",
                            zh=f"save_lora_format：{self.label} 的 LoRA 只能按 {' 或 '.join(layouts)} 格式保存"
                            "（diffusers 也能读 kohya 格式）", hint_zh=f"请把 save_lora_format 设为 {layouts[0]}")

    def _check_blocks_to_swap(self) -> None:
        """blocks_to_swap within the blocks this model has (the schema refuses it for families without any)."""
        wanted = self.config.blocks_to_swap or 0
        counts = tuple(len(getattr(self.denoiser, name)) for name in self.spec.swappable_blocks)
        largest = self.spec.max_blocks_to_swap(counts)
        if wanted > largest:
            has = " + ".join(f"{count} {name}" for count, name in zip(counts, self.spec.swappable_blocks))
            raise UserError(f"blocks_to_swap: {wanted} is more than this {self.label} model can swap "
                            f"({largest}; it has {has or 'no blocks to swap'})",
                            f"set blocks_to_swap to at most {largest}",
                            zh=f"blocks_to_swap：{wanted} 超过了这个 {self.label} 模型能交换的块数"
                            f"（{largest}；它有 {has or '0 个可交换的块'}）",
                            hint_zh=f"请把 blocks_to_swap 设为不超过 {largest}")

    @property
    def label(self) -> str:
        return self.spec.label

    # --- training ---------------------------------------------------------------------------------------
    def prepare(self) -> list[str]:
        """Once after loading, before LoRA: noise-schedule fixes and the like. Returns warnings for the log."""
        return []

    def set_attention(self, sdpa: bool, xformers: bool) -> None:
        """xformers when asked, else SDPA, else plain attention (sd-scripts' choices)."""
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        if xformers:
            try:
                self.denoiser.enable_xformers_memory_efficient_attention()
            except (ImportError, ModuleNotFoundError, ValueError, NotImplementedError) as exc:
                raise UserError(f"xformers: cannot be used here: {exc}",
                                "install xformers for your CUDA build, or set xformers: false (sdpa is as fast)",
                                zh=f"xformers：这里用不了：{exc}",
                                hint_zh="请安装与你的 CUDA 版本匹配的 xformers，或设 xformers: false（sdpa 一样快）")
        else:
            self.denoiser.set_attn_processor(AttnProcessor2_0() if sdpa else AttnProcessor())

    def enable_gradient_checkpointing(self, denoiser_checkpoint: Callable | None = None) -> None:
        """Checkpointing in the denoiser (with denoiser_checkpoint instead of torch's plain checkpoint, for
        cpu_offload_checkpointing) and the text encoders."""
        self.denoiser.enable_gradient_checkpointing(denoiser_checkpoint)
        for encoder in self.text_encoders:
            encoder.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    @abstractmethod
    def encode_text(self, captions: list[str]) -> Conditioning:
        """Conditioning of a caption batch; gradients flow only into trained text encoders."""

    def text_cache_stamp(self) -> dict[str, str]:
        """What cached text-encoder outputs depend on besides the caption and the encoders' weights."""
        return {"family": self.name}

    @abstractmethod
    def loss(self, latents: torch.Tensor, cond: Conditioning, data: dict) -> torch.Tensor:
        """One micro-batch's training loss (noise, prediction, target, weights), under the caller's autocast. Every
        random number comes from data["draws"] (trainer/training/draws.py), so processes split batches exactly."""

    @abstractmethod
    def generate(self, spec, cond: Conditioning, uncond: Conditioning, seed: int, sampler: str) -> np.ndarray:
        """One preview image (HxWx3 uint8) for a parsed sample prompt, from its conditioning: the latents under
        the caller's autocast, decoded by `decode` outside it."""

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Scaled latents (1, C, h, w) -> an HxWx3 uint8 image, outside any autocast, in the VAE's own dtype
        (float32, loading.py): under the fp16 autocast the pipelines decode in, SDXL's VAE overflows into black."""
        vae, config = self.vae, self.vae.config
        with torch.no_grad(), torch.autocast(vae.device.type, enabled=False):
            latents = latents.to(vae.device, vae.dtype) / config.scaling_factor + (config.get("shift_factor") or 0.0)
            image = vae.decode(latents).sample[0]
        return to_image((image.float() / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).cpu().numpy())

    @classmethod
    @abstractmethod
    def assemble(cls, components: dict[str, Any]):
        """The diffusers pipeline of a model's components (previews; `lora merge` saves it as a model folder)."""

    def pipeline_components(self, scheduler, text_encoders: bool) -> dict[str, Any]:
        """The components of a pipeline with the sampler's scheduler. Previews pass the text encoders' outputs,
        so they leave the encoders out (text_encoders=False): the pipelines would cast those outputs to an
        encoder's dtype, float8 when fp8_base stores it so."""
        return {**self.components, **({} if text_encoders else dict.fromkeys(self.text_encoder_names)),
                "scheduler": scheduler}

    default_guidance = 7.0  # a sample prompt's scale (--l) when it gives none

    def guidance(self, spec) -> float:
        return self.default_guidance if spec.scale is None else spec.scale

    # --- LoRA files -------------------------------------------------------------------------------------
    def export_tensors(self, alpha: float) -> dict[str, torch.Tensor]:
        """The trained LoRA in its network type's keys (kohya's or LyCORIS's), under this family's module names."""
        tensors: dict[str, torch.Tensor] = {}
        kind = NETWORK_TYPES[self.config.network_type]
        for part in self.trained_parts():
            tensors.update(kind.state_dict(part.module, part.prefix, part.rename))
        return tensors

    def network_file_shape(self, weights: dict[str, torch.Tensor]) -> tuple[int, float] | None:
        """(rank, alpha) of a LoRA file as this family writes it; None when it holds no lora_down weights."""
        return rank_and_alpha(weights)

    def load_network_weights(self, weights: dict[str, torch.Tensor]) -> set[str]:
        """Load a LoRA file of the config's network type into the trained parts' layers; returns the keys used."""
        used: set[str] = set()
        kind = NETWORK_TYPES[self.config.network_type]
        for part in self.trained_parts():
            used |= kind.load_weights(part.module, weights, part.prefix, part.rename)
        return used

    def conv_targets(self) -> list[str]:
        """The denoiser's conv layers that LoCon/LoHa/LoKr add, when the network type has them."""
        return []


def to_image(array: np.ndarray) -> np.ndarray:
    """A pipeline's float image in [0, 1] as uint8 (NaN, as an exploded model makes, becomes black)."""
    return (np.nan_to_num(array) * 255).round().clip(0, 255).astype(np.uint8)


def rank_and_alpha(weights: dict[str, torch.Tensor]) -> tuple[int, float] | None:
    """Rank and alpha of the first LoRA module of a kohya file that is not a LoCon 3x3 conv (conv_dim/conv_alpha)."""
    suffix = ".lora_down.weight"
    name = next((key[:-len(suffix)] for key, value in weights.items()
                 if key.endswith(suffix) and not (value.dim() == 4 and value.shape[-1] > 1)), None)
    if name is None:
        return None
    rank = weights[name + suffix].shape[0]
    alpha = weights.get(name + ".alpha")
    return rank, float(alpha) if alpha is not None else float(rank)
