"""The training config: one flat schema with kohya sd-scripts' key names.

Every field carries its GUI placement (tab, group, advanced) and help text, so the CLI, the GUI form,
presets, the ss_* metadata and docs/parameters.md are all derived from this one class.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# sd-scripts' sample_sampler names -> the diffusers scheduler class that implements each, with its options.
_BASE_SAMPLERS = {
    "ddim": ("DDIMScheduler", {}), "pndm": ("PNDMScheduler", {}), "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}), "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}), "dpm_2": ("KDPM2DiscreteScheduler", {}),
    "dpm_2_a": ("KDPM2AncestralDiscreteScheduler", {}),
    "dpmsolver": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmsingle": ("DPMSolverSinglestepScheduler", {}),
}
SAMPLERS = {**_BASE_SAMPLERS, **{f"k_{name}": _BASE_SAMPLERS[name]
                                 for name in ("lms", "euler", "euler_a", "dpm_2", "dpm_2_a")}}


def field(default: Any, tab: str, group: str, help: str, *, advanced: bool = False,
          metadata: bool = True, **constraints: Any) -> Any:
    """A schema field with its GUI placement and help text.

    metadata=False keeps a value out of the saved LoRA's ss_* metadata (paths, private text).
    """
    extra = {"tab": tab, "group": group, "advanced": advanced, "metadata": metadata}
    return Field(default, description=help, json_schema_extra=extra, **constraints)


def parse_resolution(value: Any) -> tuple[int, int]:
    """'512', '512,768', 512 or [512, 768] -> (width, height), as sd-scripts' --resolution."""
    if isinstance(value, (list, tuple)):
        parts = [str(v) for v in value]
    else:
        parts = str(value).replace("x", ",").split(",")
    try:
        sizes = [int(p.strip()) for p in parts if p.strip()]
    except ValueError:
        raise ValueError("must be one number or 'width,height', e.g. 512 or 768,512") from None
    if len(sizes) == 1:
        sizes *= 2
    if len(sizes) != 2 or min(sizes) < 64:
        raise ValueError("must be one number or 'width,height' with each side at least 64")
    return sizes[0], sizes[1]


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- Paths ------------------------------------------------------------------------------------
    pretrained_model_name_or_path: str = field(
        "", "paths", "model",
        "Base model: a local diffusers folder, or a Hugging Face repo id (downloaded when online).",
        metadata=False)
    v2: bool | None = field(
        None, "paths", "model",
        "The base model is Stable Diffusion 2.x. Empty = detect from the model (its text encoder).",
        advanced=True)
    v_parameterization: bool | None = field(
        None, "paths", "model",
        "The model predicts v (SD2.x 768-v models) instead of noise. Empty = read the model's scheduler config.",
        advanced=True)
    train_data_dir: str = field(
        "", "paths", "dataset",
        "Folder holding sub-folders named N_name: N is how often each image repeats per epoch, name the "
        "words used for images without a caption file.", metadata=False)
    reg_data_dir: str | None = field(
        None, "paths", "dataset",
        "Optional regularization images (same N_name layout). They are repeated to match the training "
        "images and keep the class from drifting toward your subject.", metadata=False)
    prior_loss_weight: float = field(
        1.0, "paths", "dataset", "Loss weight of regularization images.", advanced=True, ge=0)
    caption_extension: str = field(
        ".txt", "paths", "dataset", "Extension of the caption file next to each image (.txt or .caption).")
    output_dir: str = field(
        "./outputs", "paths", "output", "Folder for the LoRA files and the run folders.", metadata=False)
    output_name: str = field(
        "lora", "paths", "output", "File name of the LoRA, without extension.", metadata=True,
        min_length=1, max_length=128)
    overwrite: bool = field(
        False, "paths", "output",
        "Allow replacing LoRA files of an earlier run with the same name. Off: such a run is refused.",
        advanced=True, metadata=False)
    training_comment: str = field(
        "", "paths", "output", "Free text stored in the LoRA's metadata (ss_training_comment).")

    # --- Steps ------------------------------------------------------------------------------------
    resolution: str = field(
        "512,512", "steps", "image", "Training size 'width,height' or one number: 512 for SD1.5, "
        "768 for SD2-v. With buckets it sets the pixel area every bucket keeps.")
    enable_bucket: bool = field(
        True, "steps", "image", "Aspect-ratio buckets: train each image near its own shape instead of a "
        "square crop.")
    min_bucket_reso: int = field(256, "steps", "image", "Smallest bucket side.", advanced=True, ge=64)
    max_bucket_reso: int = field(1024, "steps", "image", "Largest bucket side.", advanced=True, ge=64)
    bucket_reso_steps: int = field(
        64, "steps", "image", "Bucket sides are multiples of this (64 is safe for every model).",
        advanced=True, ge=8)
    bucket_no_upscale: bool = field(
        False, "steps", "image", "Never enlarge small images: each gets a bucket of its own size, rounded "
        "down to bucket_reso_steps.", advanced=True)
    train_batch_size: int = field(
        1, "steps", "steps", "Images per step. Larger is faster per epoch but needs more VRAM and fewer "
        "steps are taken.", ge=1, le=256)
    max_train_epochs: int | None = field(
        10, "steps", "steps", "Epochs: one epoch shows every image its folder's repeat count times.", ge=1)
    max_train_steps: int | None = field(
        None, "steps", "steps", "Upper limit on optimizer steps; empty = epochs decide.", ge=1)
    gradient_accumulation_steps: int = field(
        1, "steps", "steps", "Add up the gradients of this many batches before each optimizer step "
        "(a larger effective batch without more VRAM).", advanced=True, ge=1, le=1024)
    save_every_n_epochs: int | None = field(
        None, "steps", "saving", "Also save a LoRA file every N epochs (name-000004.safetensors).", ge=1)
    save_precision: Literal["float", "fp16", "bf16"] = field(
        "fp16", "steps", "saving", "Number format of the saved file. fp16 halves the size and loads everywhere.")
    save_model_as: Literal["safetensors", "ckpt", "pt"] = field(
        "safetensors", "steps", "saving", "File format. safetensors is safe and loads everywhere; ckpt and pt "
        "are for old tools only.", advanced=True)
    seed: int = field(1337, "steps", "steps", "Random seed: the same seed and config give the same result.",
                      ge=0, le=2**32 - 1)
    cache_latents: bool = field(
        True, "steps", "speed", "Encode every image with the VAE once before training instead of every step.")
    cache_latents_to_disk: bool = field(
        False, "steps", "speed", "Keep the latent cache next to the images so later runs skip encoding.",
        advanced=True)
    gradient_checkpointing: bool = field(
        False, "steps", "speed", "Recompute activations in the backward pass: much less VRAM, ~20-30% slower.")
    mixed_precision: Literal["no", "fp16", "bf16"] = field(
        "fp16", "steps", "speed", "Compute precision. fp16 for most NVIDIA cards, bf16 on RTX 30xx and newer; "
        "'no' (fp32) on CPU.")
    max_data_loader_n_workers: int = field(
        2, "steps", "speed", "Processes that load images in the background (0 = in the training process).",
        advanced=True, ge=0, le=64)

    # --- Model effect -----------------------------------------------------------------------------
    network_module: Literal["networks.lora"] = field(
        "networks.lora", "effect", "network", "Network type (sd-scripts module name). networks.lora: LoRA "
        "on the attention and feed-forward layers.", advanced=True)
    network_dim: int = field(
        32, "effect", "network", "LoRA rank. More keeps more detail but also more noise and a bigger file; "
        "8-32 for a character, 32-128 for a style.", ge=1, le=1024)
    network_alpha: float = field(
        32.0, "effect", "network", "Scales the LoRA by alpha/dim while training. Equal to dim: no scaling; "
        "smaller: weaker updates, so raise the learning rate.", gt=0)
    network_train_unet_only: bool = field(
        False, "effect", "network", "Train only the UNet (needed with cached text-encoder outputs; often "
        "enough for styles).")
    network_train_text_encoder_only: bool = field(
        False, "effect", "network", "Train only the text encoder.", advanced=True)
    learning_rate: float = field(
        1e-4, "effect", "learning_rate", "Base learning rate, used where unet_lr or text_encoder_lr is empty.",
        gt=0, le=10)
    unet_lr: float | None = field(
        None, "effect", "learning_rate", "UNet learning rate (typical 1e-4 with AdamW).", gt=0, le=10)
    text_encoder_lr: float | None = field(
        None, "effect", "learning_rate", "Text-encoder learning rate, usually a half to a tenth of unet_lr.",
        gt=0, le=10)
    optimizer_type: Literal["AdamW"] = field(
        "AdamW", "effect", "optimizer", "Optimizer.")
    lr_scheduler: Literal["constant", "cosine"] = field(
        "cosine", "effect", "optimizer", "How the learning rate changes over the run: constant, or cosine "
        "decay to zero.")
    lr_warmup_steps: int = field(
        0, "effect", "optimizer", "Steps over which the learning rate rises from 0 at the start.", ge=0)
    max_grad_norm: float = field(
        1.0, "effect", "optimizer", "Clip the gradient norm to this value (0 = no clipping).",
        advanced=True, ge=0)
    clip_skip: int = field(
        1, "effect", "text", "Use the text encoder's output this many layers from the end: 2 for anime "
        "models (NovelAI lineage), 1 for SD1.5 and realistic models.", ge=1, le=12)

    # --- Run: previews ----------------------------------------------------------------------------
    sample_prompts: str | list[str] | None = field(
        None, "run", "samples", "Preview prompts: a text file with one prompt a line, or a list. Options "
        "after the prompt: --n negative --w width --h height --s steps --l guidance --d seed.",
        metadata=False)
    sample_every_n_epochs: int | None = field(
        None, "run", "samples", "Make previews every N epochs.", ge=1)
    sample_every_n_steps: int | None = field(
        None, "run", "samples", "Make previews every N steps.", ge=1)
    sample_sampler: Literal[tuple(SAMPLERS)] = field(  # type: ignore[valid-type]
        "euler_a", "run", "samples", "Sampler for the previews.")
    sample_at_first: bool = field(
        False, "run", "samples", "Make previews before the first step too (the base model's look).")

    @field_validator("resolution", mode="before")
    @classmethod
    def _normalise_resolution(cls, value: Any) -> str:
        width, height = parse_resolution(value)
        return f"{width},{height}"

    @field_validator("caption_extension")
    @classmethod
    def _dotted_extension(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty, e.g. .txt")
        return value if value.startswith(".") else "." + value

    @field_validator("output_name")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        if any(c in value for c in '/\\:*?"<>|') or value.strip(" .") != value:
            raise ValueError('must be a plain file name without / \\ : * ? " < > | and without leading or '
                             "trailing dots or spaces")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.network_train_unet_only and self.network_train_text_encoder_only:
            raise ValueError("network_train_unet_only and network_train_text_encoder_only: choose at most one")
        if self.max_train_epochs is None and self.max_train_steps is None:
            raise ValueError("max_train_epochs and max_train_steps are both empty: set at least one")
        if self.min_bucket_reso > self.max_bucket_reso:
            raise ValueError(f"min_bucket_reso ({self.min_bucket_reso}) is larger than max_bucket_reso "
                             f"({self.max_bucket_reso})")
        return self

    # --- Derived values ---------------------------------------------------------------------------
    @property
    def resolution_wh(self) -> tuple[int, int]:
        return parse_resolution(self.resolution)

    @property
    def train_unet(self) -> bool:
        return not self.network_train_text_encoder_only

    @property
    def train_text_encoder(self) -> bool:
        return not self.network_train_unet_only

    @property
    def effective_unet_lr(self) -> float:
        return self.unet_lr or self.learning_rate

    @property
    def effective_text_encoder_lr(self) -> float:
        return self.text_encoder_lr or self.learning_rate


def field_info(name: str) -> dict[str, Any]:
    """GUI placement and flags of one field (tab, group, advanced, metadata)."""
    return dict(TrainConfig.model_fields[name].json_schema_extra or {})
