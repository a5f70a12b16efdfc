"""The model families Danlu trains, as one table: what each is made of, how its files are recognised and laid
out, and its LoRA files' conventions. Torch-free: the GUI, the schema and the checks read it without loading a
model. The family's code (loading, conditioning, loss, previews) is its ModelFamily class, named here and
imported only when a model is loaded (registry.family_class). docs/architecture.md lists what a new family adds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CLIP_L_TOKENIZER = "openai/clip-vit-large-patch14"


@dataclass(frozen=True)
class TextEncoder:
    component: str  # its diffusers subfolder, components key and optimizer group: text_encoder, text_encoder_2
    model: str  # what a user calls it: CLIP-L, OpenCLIP-H, OpenCLIP-G, T5-XXL
    lora_prefix: str  # kohya's module-name prefix: lora_te, lora_te1, lora_te2, lora_te3
    file_prefix: str  # where an all-in-one single file (A1111 / ComfyUI) keeps its weights
    tokenizer: str  # Hugging Face repo of its tokenizer, for a single file that carries none
    architecture: str = "clip"  # the transformers class: clip | clip_projection (pooled projection) | t5
    openclip: bool = False  # OpenCLIP: resblocks layout in LDM files, and its tokenizer pads with "!"
    opt_in: str | None = None  # the config flag without which it carries no LoRA (Flux's T5: train_t5xxl)

    @property
    def tokenizer_component(self) -> str:
        return self.component.replace("text_encoder", "tokenizer")


@dataclass(frozen=True)
class Family:
    name: str  # the model_family value
    label: str  # what users call it
    implementation: str  # "module:Class" of its ModelFamily
    denoiser: str  # unet | transformer: its subfolder, components key and optimizer group
    denoiser_prefix: str  # kohya's module-name prefix of the denoiser's LoRA modules
    text_encoders: tuple[TextEncoder, ...]
    trains_text_encoder: bool  # the default when network_train_unet_only is empty
    scheduler: str  # the training noise schedule: ddpm | flow_match
    base_model_version: str  # ss_base_model_version of its LoRAs
    # --- recognition (detect.py) ---------------------------------------------------------------------------
    model_kinds: tuple[str, ...]  # what a file given as the base model may be: model, or also its denoiser alone
    context_dims: tuple[int, ...] = ()  # the UNet's cross-attention width (attn2.to_k input) in its files
    ldm_hint: str | None = None  # tensor names only its original-layout (LDM) checkpoints have
    lora_hint: str | None = None  # module names only its LoRAs have; later rows are tried first (their names
    # may contain an earlier row's: Flux's CLIP is lora_te1 as SDXL's)
    embedding_width: int | None = None  # width of its textual-inversion vectors
    folder_rule: tuple[str, str, str] | None = None  # (config file, key, value) telling its diffusers folder
    # from the other rows with the same denoiser; the row without one takes the rest
    # --- single files (loading.py, single_file.py, original_layout.py) ----------------------------------------
    shipped_configs: tuple[str, ...] = ()  # folders in configs/ describing its single files, the standard first
    separate_files: dict[str, str] = field(default_factory=dict)  # component -> config key of its own file
    single_file_parts: tuple[str, ...] = ()  # what its original-layout file holds (the rest: separate files)
    # --- LoRA files ------------------------------------------------------------------------------------------
    lora_layouts: tuple[str, ...] = ("kohya",)  # save_lora_format values it writes
    fused_qkv: bool = False  # the original model fuses q/k/v (and kohya's names with it), diffusers does not
    alpha_keys: bool = False  # diffusers-layout LoRAs carry alphas as .alpha keys, not in the metadata header
    fp16_overflows: bool = False  # made in bf16: its activations overflow fp16
    # --- memory estimate (trainer/checks/memory.py) ------------------------------------------------------------
    # GiB of activations per megapixel of a batch in 16-bit compute: without gradient checkpointing, with it, and
    # with cpu_offload_checkpointing (the checkpointed blocks' inputs in system RAM). Uncalibrated: set from
    # published sd-scripts figures until a GPU run (bench/gpu_memory.py) measures them.
    activation_gib: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # The denoiser's block lists blocks_to_swap may keep on the CPU, in the order they run (trainer/training/
    # block_swap.py); empty: the family has no block swap.
    swappable_blocks: tuple[str, ...] = ()

    def swap_split(self, blocks_to_swap: int) -> tuple[int, ...]:
        """How many of each swappable list's last blocks blocks_to_swap swaps. With two lists (Flux's double and
        single blocks) sd-scripts' rule: half of N double blocks, twice the rest single ones (a single block is
        about half a double one)."""
        if len(self.swappable_blocks) == 2:
            double = blocks_to_swap // 2
            return double, (blocks_to_swap - double) * 2
        return (blocks_to_swap,)[:len(self.swappable_blocks)]  # one list: its last N blocks

    def max_blocks_to_swap(self, counts: tuple[int, ...]) -> int:
        """The largest blocks_to_swap whose split fits lists of these block counts."""
        largest = 0
        while self.swappable_blocks and all(n <= count for n, count in zip(self.swap_split(largest + 1), counts)):
            largest += 1
        return largest

    @property
    def components(self) -> tuple[str, ...]:
        """Every component a loaded model has, in loading order."""
        encoders = [name for e in self.text_encoders for name in (e.tokenizer_component, e.component)]
        return (*encoders, self.denoiser, "vae", "scheduler")

    def text_encoder(self, component: str) -> TextEncoder:
        """The text encoder of a text_encoder* or tokenizer* component."""
        return next(e for e in self.text_encoders if component in (e.component, e.tokenizer_component))


_SD = dict(denoiser="unet", denoiser_prefix="lora_unet", trains_text_encoder=True, scheduler="ddpm",
           model_kinds=("model",), separate_files={"vae": "vae"})
FAMILIES: dict[str, Family] = {family.name: family for family in (
    Family("sd1", "SD1.x", "trainer.families.sd:SDFamily", **_SD, base_model_version="sd_v1",
           text_encoders=(TextEncoder("text_encoder", "CLIP-L", "lora_te", "cond_stage_model.transformer.",
                                      CLIP_L_TOKENIZER),),
           context_dims=(768,), ldm_hint=r"^cond_stage_model\.transformer\.", embedding_width=768,
           shipped_configs=("sd1",), single_file_parts=("unet", "vae", "text_encoder"),
           activation_gib=(9.0, 2.0, 1.5)),
    Family("sd2", "SD2.x", "trainer.families.sd:SDFamily", **_SD, base_model_version="sd_v2",
           text_encoders=(TextEncoder("text_encoder", "OpenCLIP-H", "lora_te", "cond_stage_model.model.",
                                      CLIP_L_TOKENIZER, openclip=True),),
           context_dims=(1024,), ldm_hint=r"^cond_stage_model\.model\.", embedding_width=1024,
           folder_rule=("text_encoder/config.json", "hidden_act", "gelu"),  # CLIP-L uses quick_gelu
           shipped_configs=("sd2",), single_file_parts=("unet", "vae", "text_encoder"),
           activation_gib=(9.0, 2.0, 1.5)),
    Family("sdxl", "SDXL", "trainer.families.sdxl:SDXLFamily", **_SD, base_model_version="sdxl_base_v1-0",
           text_encoders=(TextEncoder("text_encoder", "CLIP-L", "lora_te1", "conditioner.embedders.0.transformer.",
                                      CLIP_L_TOKENIZER),
                          TextEncoder("text_encoder_2", "OpenCLIP-G", "lora_te2", "conditioner.embedders.1.model.",
                                      "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", "clip_projection", openclip=True)),
           context_dims=(2048, 1280),  # 1280: the refiner
           ldm_hint=r"^(conditioner\.embedders\.|model\.diffusion_model\.label_emb\.)",
           lora_hint=r"lora_te[12]_|text_encoder_2|_input_blocks_|_output_blocks_|add_embedding",
           folder_rule=("unet/config.json", "addition_embed_type", "text_time"),
           shipped_configs=("sdxl",), single_file_parts=("unet", "vae", "text_encoder", "text_encoder_2"),
           activation_gib=(16.0, 3.0, 2.2)),
    Family("flux", "Flux.1", "trainer.families.flux:FluxFamily", denoiser="transformer", denoiser_prefix="lora_unet",
           text_encoders=(TextEncoder("text_encoder", "CLIP-L", "lora_te1", "text_encoders.clip_l.transformer.",
                                      CLIP_L_TOKENIZER),
                          TextEncoder("text_encoder_2", "T5-XXL", "lora_te3", "text_encoders.t5xxl.transformer.",
                                      "google/t5-v1_1-xxl", "t5", opt_in="train_t5xxl")),
           trains_text_encoder=False, scheduler="flow_match", base_model_version="flux1",
           model_kinds=("transformer", "model"), lora_hint=r"double_blocks|single_blocks|single_transformer_blocks",
           shipped_configs=("flux-dev", "flux-schnell"),
           separate_files={"vae": "ae", "text_encoder": "clip_l", "text_encoder_2": "t5xxl"},
           single_file_parts=("transformer",), lora_layouts=("kohya", "diffusers"), fused_qkv=True,
           alpha_keys=True, fp16_overflows=True, activation_gib=(35.0, 6.0, 4.4),
           swappable_blocks=("transformer_blocks", "single_transformer_blocks")),
)}
FAMILY_LABELS = {name: family.label for name, family in FAMILIES.items()}
