"""Steps tab: image size and buckets, how long to train, when to save, speed and memory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import field_validator, model_validator

from trainer.common.errors import RuleError
from trainer.config.schema.base import SchemaPart, field, parse_resolution
from trainer.families.table import FAMILIES

# The package each quantize_base choice imports (none: nothing).
QUANTIZE_PACKAGES = {"int8": "torchao", "nf4": "bitsandbytes"}


class StepsFields(SchemaPart):
    resolution: str = field(
        "512,512", "steps", "image",
        "Training size 'width,height' or one number: 512 for SD1.5, 768 for SD2-v. With buckets it sets the "
        "pixel area every bucket keeps. Larger learns finer detail, costs VRAM and time.",
        "训练分辨率，'宽,高' 或一个数：SD1.5 用 512，SD2-v 用 768。开启分桶时它决定每个桶的像素面积。"
        "越大细节越多，显存和时间也越多。")
    enable_bucket: bool = field(
        True, "steps", "image",
        "Aspect-ratio buckets: train each image near its own shape instead of a square crop, so nothing is cut "
        "off.", "宽高比分桶：每张图按接近自身比例的尺寸训练，而不是裁成正方形，避免主体被裁掉。")
    min_bucket_reso: int = field(256, "steps", "image", "Smallest bucket side in pixels.", "分桶的最小边长（像素）。",
                                 advanced=True, ge=64)
    max_bucket_reso: int = field(1024, "steps", "image", "Largest bucket side in pixels.", "分桶的最大边长（像素）。",
                                 advanced=True, ge=64)
    bucket_reso_steps: int = field(
        64, "steps", "image", "Bucket sides are multiples of this; 64 is safe for every model.",
        "分桶边长取它的整数倍，64 对所有模型都安全。", advanced=True, ge=8)
    bucket_no_upscale: bool = field(
        False, "steps", "image",
        "Never enlarge small images: each gets a bucket of its own size, rounded down to bucket_reso_steps.",
        "不放大小图：小图按自身尺寸（向下取整到分桶步长）分桶。", advanced=True)
    train_batch_size: int = field(
        1, "steps", "steps",
        "Images per step. Larger is faster per epoch but needs more VRAM and takes fewer steps, so raise the "
        "learning rate or epochs with it.",
        "每步同时训练的图片数。越大每轮越快，但更吃显存、总步数变少，需要相应提高学习率或轮数。", ge=1, le=256)
    max_train_epochs: int | None = field(
        10, "steps", "steps",
        "Epochs: one epoch shows every image its folder's repeat count times. 10-20 is typical. A config that "
        "gives max_train_steps and leaves this out trains those steps.",
        "训练轮数：每轮每张图按其文件夹的重复次数各训练一次。常用 10-20。配置只写了 max_train_steps 而没写本项时，"
        "按步数训练。", ge=1)
    max_train_steps: int | None = field(
        None, "steps", "steps", "Optimizer steps to train. As in sd-scripts, max_train_epochs wins when both are "
        "set; a config that names only max_train_steps trains those steps.", "训练总步数。与 sd-scripts 一致，"
        "两者都设置时以 max_train_epochs 为准；配置只写了 max_train_steps 时按步数训练。", ge=1)
    gradient_accumulation_steps: int = field(
        1, "steps", "steps",
        "Add up the gradients of this many batches before each optimizer step: a larger effective batch without "
        "more VRAM.", "梯度累积：累积这么多批的梯度再更新一次，不增加显存也能得到更大的等效批大小。",
        advanced=True, ge=1, le=1024)
    on_nan: Literal["stop", "warn"] = field(
        "stop", "steps", "steps",
        "What a step whose loss or gradients are NaN/inf does. Either way that update is not applied, so no file "
        "gets broken weights. stop: end the run at once as failed, with a diagnosis (fp16 overflow, a learning "
        "rate too high, ...); the epoch files saved before stay usable. warn: skip the step, warn, and go on; "
        "only worth it when a rare single bad batch causes it. Gradient overflows that fp16's loss scaler skips "
        "by itself are normal and do not count.",
        "某一步的 loss 或梯度出现 NaN/inf（炸炉）时怎么办。两种方式都不会应用这一步的更新，保存的文件不会被坏权重污染。"
        "stop：立即结束训练并标记为失败，同时给出诊断（fp16 溢出、学习率过高等），之前保存的各轮文件照常可用。"
        "warn：跳过这一步、发出警告后继续训练；只在偶尔一批坏数据引起时才值得用。fp16 的损失缩放器自己跳过的梯度溢出属于正常现象，"
        "不算在内。",
        advanced=True, metadata=False)
    save_every_n_epochs: int | None = field(
        None, "steps", "saving", "Also save a LoRA file every N epochs (name-000004.safetensors), to pick the best "
        "epoch later.", "每 N 轮额外保存一次 LoRA（name-000004.safetensors），方便事后挑出效果最好的一轮。", ge=1)
    save_precision: Literal["float", "fp16", "bf16"] = field(
        "fp16", "steps", "saving", "Number format of the saved file. fp16 halves the size and loads everywhere.",
        "保存文件的精度。fp16 体积减半，所有工具都能加载。")
    save_model_as: Literal["safetensors", "ckpt", "pt"] = field(
        "safetensors", "steps", "saving",
        "File format. safetensors is safe and loads everywhere; ckpt and pt only for old tools.",
        "文件格式。safetensors 安全且通用；ckpt 和 pt 只为兼容旧工具。", advanced=True)
    save_lora_format: Literal["kohya", "diffusers"] = field(
        "kohya", "steps", "saving",
        "Key layout of the LoRA file. kohya: what A1111, Forge and ComfyUI read (for Flux.1 the original "
        "model's names with fused q/k/v). diffusers: the diffusers/peft names, for scripts that load LoRAs with "
        "diffusers (Flux.1 only; SD's kohya files already load there).",
        "LoRA 文件的键名格式。kohya：A1111、Forge、ComfyUI 读取的格式（Flux.1 使用原始模型的命名，q/k/v 合并）。"
        "diffusers：diffusers/peft 的命名，供用 diffusers 加载 LoRA 的脚本使用（仅 Flux.1；SD 的 kohya 文件 diffusers "
        "本来就能加载）。", advanced=True)
    save_every_n_steps: int | None = field(
        None, "steps", "saving", "Also save a LoRA file every N steps (name-step00000500.safetensors).",
        "每 N 步额外保存一次 LoRA（name-step00000500.safetensors）。", advanced=True, ge=1)
    save_last_n_epochs: int | None = field(
        None, "steps", "saving", "Keep only the files of the last N epoch saves; older ones are deleted.",
        "只保留最近 N 次按轮保存的文件，更早的会被删除。", advanced=True, ge=1)
    save_last_n_steps: int | None = field(
        None, "steps", "saving", "Delete step files older than this many steps.",
        "删除早于最近这么多步的按步保存文件。", advanced=True, ge=1)
    no_metadata: bool = field(
        False, "steps", "saving", "Write no ss_* training metadata into the LoRA file (hides your settings and "
        "dataset tags).", "不在 LoRA 文件中写入 ss_* 训练元数据（隐藏训练参数和数据集标签）。", advanced=True)
    save_state: bool = field(
        False, "steps", "saving",
        "With each epoch or step file, and at the end, also save the training state (optimizer, scheduler, random "
        "state) in a folder name-000004-state (name-state at the end, as sd-scripts), so the run can be resumed.",
        "每次保存 LoRA 时以及训练结束时，同时保存训练状态（优化器、调度器、随机数状态）到 name-000004-state 文件夹"
        "（结束时为 name-state，与 sd-scripts 一致），以便断点续训。",
        advanced=True)
    save_state_on_train_end: bool = field(
        False, "steps", "saving", "Save the training state (name-state) when the run ends.",
        "训练结束时保存训练状态（name-state 文件夹）。", advanced=True)
    save_last_n_epochs_state: int | None = field(
        None, "steps", "saving", "Keep only the last N epoch state folders.", "只保留最近 N 个按轮保存的状态文件夹。",
        advanced=True, ge=1)
    save_last_n_steps_state: int | None = field(
        None, "steps", "saving", "Delete step state folders older than this many steps.",
        "删除早于最近这么多步的按步状态文件夹。", advanced=True, ge=1)
    resume: str | None = field(
        None, "steps", "saving",
        "Continue a run from a saved state folder (name-000004-state): same steps, schedule and data order as if "
        "it had never stopped.", "从保存的状态文件夹（name-000004-state）继续训练：步数、学习率和数据顺序都与未中断时一致。",
        advanced=True, metadata=False, machine=True, path="folder")
    seed: int = field(1337, "steps", "steps", "Random seed: the same seed and config give the same result.",
                      "随机种子：相同的种子和配置得到相同的结果。", ge=0, le=2**32 - 1)
    cache_latents: bool = field(
        True, "steps", "speed", "Encode every image with the VAE once before training instead of every step.",
        "训练前用 VAE 把所有图片编码一次并缓存，不必每步重复编码，明显更快。")
    cache_latents_to_disk: bool = field(
        False, "steps", "speed", "Keep the latent cache next to the images so later runs skip encoding.",
        "把潜变量缓存保存在图片旁边，之后的训练可直接复用。", advanced=True)
    gradient_checkpointing: bool = field(
        False, "steps", "speed", "Recompute activations in the backward pass: much less VRAM, ~20-30% slower.",
        "梯度检查点：反向传播时重算激活值，显存大幅减少，速度慢约 20-30%。")
    fp8_base: bool = field(
        False, "steps", "speed",
        "Store the frozen base model's UNet/transformer weights in float8 and compute in bf16/fp16: about half "
        "the VRAM of the base weights (Flux.1 dev fits a 16 GB card). Slightly less precise; the LoRA itself "
        "stays in full precision.",
        "把冻结的底模 UNet/transformer 权重以 float8 存放、计算时转为 bf16/fp16：底模权重显存约减半（Flux.1 dev "
        "可在 16GB 显卡上训练）。精度略降，LoRA 本身仍是全精度。")
    fp8_base_unet: bool = field(
        False, "steps", "speed",
        "fp8 for the UNet/transformer only (sd-scripts' option): the text encoders keep bf16/fp16. Without it, "
        "fp8_base also stores the frozen text encoders in float8 (T5-XXL: 8.9 → 4.7 GiB while it encodes the "
        "captions), which changes their outputs slightly.",
        "只对 UNet/transformer 使用 fp8（sd-scripts 的同名选项）：文本编码器保持 bf16/fp16。不开时，fp8_base 也会把"
        "冻结的文本编码器以 float8 存放（T5-XXL 编码标注时从 8.9 GiB 降到 4.7 GiB），其输出会略有变化。",
        advanced=True)
    quantize_base: Literal["none", "int8", "nf4"] = field(
        "none", "steps", "speed",
        "Store the frozen base model's UNet/transformer linear layers quantized; the LoRA trains in full "
        "precision on top (QLoRA). int8: about half the VRAM of the base weights against bf16/fp16, output very "
        "close to the original (torchao weight-only int8). nf4: about a quarter, as QLoRA does; a little less "
        "faithful, so fine detail can suffer slightly (bitsandbytes). Both cost some speed for unpacking weights "
        "every step. The saved LoRA applies to the normal, unquantized model.",
        "把冻结底模 UNet/transformer 的线性层以量化形式存放，LoRA 仍以全精度在其上训练（即 QLoRA）。int8：底模权重显存"
        "约为 bf16/fp16 的一半，输出与原模型非常接近（torchao 仅权重 int8）。nf4：约四分之一，与 QLoRA 相同；"
        "精度略低，细节可能稍受影响（bitsandbytes）。两者每步都要解包权重，速度会慢一些。训练出的 LoRA 照常用于未量化的原模型。",
        advanced=True)
    blocks_to_swap: int | None = field(
        None, "steps", "speed",
        "Flux.1 only (sd-scripts' option): keep the base weights of this many of the transformer's last blocks in "
        "system RAM and copy each to the GPU just while it runs (ahead of time, beside the compute), in the "
        "forward and the backward pass. N swaps N/2 double blocks and twice the rest single blocks; Flux.1 has "
        "19 + 38, so up to 38 (sd-scripts stops at 35). `python -m trainer check` shows the VRAM it saves. "
        "Slower the more blocks swap, and needs that much free RAM; the LoRA itself stays on the GPU.",
        "仅用于 Flux.1（即 sd-scripts 的同名选项）：把 transformer 最后这么多个块的底模权重放在内存里，只在它们运行时"
        "复制到显卡（提前复制，与计算并行），前向和反向都是如此。N 表示 N/2 个双流块、其余部分的 2 倍个单流块；Flux.1 "
        "有 19 + 38 个块，所以最多 38（sd-scripts 最多 35）。`python -m trainer check` 会显示它省下的显存。"
        "交换的块越多越慢，且需要相应的空闲内存；LoRA 本身仍在显卡上。",
        advanced=True, metadata=False, ge=0)  # how memory is used, not what is trained
    cpu_offload_checkpointing: bool = field(
        False, "steps", "speed",
        "With gradient_checkpointing (sd-scripts' option): the activations kept between checkpointed blocks wait "
        "in system RAM instead of VRAM and come back for the backward pass. Saves about a quarter of the "
        "activation memory at large resolutions, costs some speed; not with blocks_to_swap.",
        "配合梯度检查点使用（sd-scripts 的同名选项）：检查点块之间保存的激活值放在内存而不是显存里，反向传播时再取回。"
        "高分辨率下约省四分之一的激活显存，速度会慢一些；不能与 blocks_to_swap 同时使用。",
        advanced=True, metadata=False)  # how memory is used, not what is trained
    mixed_precision: Literal["no", "fp16", "bf16"] = field(
        "fp16", "steps", "speed",
        "Compute precision. fp16 for most NVIDIA cards, bf16 on RTX 30xx and newer (fewer NaN problems); "
        "'no' (fp32) on a CPU.",
        "计算精度。大多数 N 卡用 fp16，RTX 30 系及更新的显卡用 bf16（更不容易出现 NaN）；CPU 上用 no（fp32）。")
    vae_batch_size: int = field(
        1, "steps", "speed", "Images the VAE encodes at once while caching latents; higher is faster, needs VRAM.",
        "缓存潜变量时 VAE 一次编码的图片数，越大越快，但更占显存。", advanced=True, ge=1, le=256)
    full_fp16: bool = field(
        False, "steps", "speed", "Keep the LoRA weights themselves in fp16 (with mixed_precision fp16): less VRAM, "
        "less stable.", "LoRA 权重本身也用 fp16（需 mixed_precision 为 fp16）：更省显存，但更不稳定。", advanced=True)
    full_bf16: bool = field(
        False, "steps", "speed", "Keep the LoRA weights themselves in bf16 (with mixed_precision bf16): less VRAM.",
        "LoRA 权重本身也用 bf16（需 mixed_precision 为 bf16）：更省显存。", advanced=True)
    sdpa: bool = field(
        True, "steps", "speed", "PyTorch's scaled-dot-product attention (fast, low memory). Off without xformers: "
        "the plain attention.", "使用 PyTorch 的 SDPA 注意力（快且省显存）。关闭且不用 xformers 时使用普通注意力。",
        advanced=True)
    xformers: bool = field(
        False, "steps", "speed", "Use xformers attention (needs the xformers package and a GPU); it takes precedence "
        "over sdpa.", "使用 xformers 注意力（需要安装 xformers 和 GPU），开启时优先于 sdpa。", advanced=True)
    torch_compile: bool = field(
        False, "steps", "speed",
        "Compile the UNet/transformer with torch.compile (sd-scripts' option): faster steps once compiled, but the "
        "first steps wait for the compiler (minutes for a large model), and each new bucket size may compile again.",
        "用 torch.compile 编译 UNet/transformer（sd-scripts 的同名选项）：编译后每步更快，但最初几步要等编译（大模型需"
        "几分钟），每遇到新的分桶尺寸还可能重新编译。", advanced=True, metadata=False)  # how it runs, not what is trained
    dynamo_backend: Literal["inductor", "eager", "aot_eager", "cudagraphs"] = field(
        "inductor", "steps", "speed",
        "torch_compile's backend (sd-scripts' option): inductor generates fast kernels; eager and aot_eager only "
        "trace (for finding problems).", "torch_compile 使用的后端（sd-scripts 的同名选项）：inductor 生成高速内核；"
        "eager 和 aot_eager 只做图捕获（用于排查问题）。", advanced=True, metadata=False)
    persistent_data_loader_workers: bool = field(
        True, "steps", "speed", "Keep image-loading workers alive between epochs instead of restarting them.",
        "各轮之间保留图片加载进程，不必每轮重启。", advanced=True)
    max_data_loader_n_workers: int = field(
        2, "steps", "speed", "Processes that load images in the background (0 = in the training process).",
        "后台加载图片的进程数（0 表示在训练进程内加载）。", advanced=True, ge=0, le=64)

    @model_validator(mode="before")
    @classmethod
    def _steps_named_alone(cls, data: Any) -> Any:
        return {**data, **length_defaults(data)} if isinstance(data, Mapping) else data

    @field_validator("resolution", mode="before")
    @classmethod
    def _normalise_resolution(cls, value: Any) -> str:
        width, height = parse_resolution(value)
        return f"{width},{height}"

    @model_validator(mode="after")
    def _precision_rules(self):
        if self.full_fp16 and self.mixed_precision != "fp16":
            raise RuleError("full_fp16 needs mixed_precision: fp16", "full_fp16", "mixed_precision",
                            zh="full_fp16 需要 mixed_precision: fp16")
        if self.full_bf16 and self.mixed_precision != "bf16":
            raise RuleError("full_bf16 needs mixed_precision: bf16", "full_bf16", "mixed_precision",
                            zh="full_bf16 需要 mixed_precision: bf16")
        fp8 = "fp8_base" if self.fp8_base else "fp8_base_unet" if self.fp8_base_unet else None
        if fp8 and self.mixed_precision == "no":
            raise RuleError(f"{fp8} computes in half precision: set mixed_precision to bf16 (or fp16)", fp8,
                            "mixed_precision", zh=f"{fp8} 用半精度计算：请把 mixed_precision 设为 bf16（或 fp16）")
        if fp8 and self.quantize_base != "none":
            raise RuleError(f"{fp8} and quantize_base both shrink the base model's weights: use only one "
                            f"(quantize_base: int8 keeps more precision than {fp8} at the same size)", fp8,
                            "quantize_base", zh=f"{fp8} 和 quantize_base 都是压缩底模权重：只用其中一个（同样大小下，"
                            f"quantize_base: int8 比 {fp8} 保留更多精度）")
        return self

    @model_validator(mode="after")
    def _swap_rules(self):
        family = FAMILIES.get(getattr(self, "model_family", "auto"))  # auto: the family check decides at load
        if self.blocks_to_swap and family is not None and not family.swappable_blocks:
            raise RuleError(f"blocks_to_swap swaps Flux.1's transformer blocks; {family.label} has none to swap "
                            "(its models fit with gradient_checkpointing, fp8_base or quantize_base)",
                            "blocks_to_swap", "model_family",
                            zh=f"blocks_to_swap 交换的是 Flux.1 的 transformer 块；{family.label} 没有可交换的块"
                            "（它的模型用 gradient_checkpointing、fp8_base 或 quantize_base 就能放下）")
        if self.cpu_offload_checkpointing and not self.gradient_checkpointing:
            raise RuleError("cpu_offload_checkpointing offloads what gradient checkpointing keeps: turn on "
                            "gradient_checkpointing too", "cpu_offload_checkpointing", "gradient_checkpointing",
                            zh="cpu_offload_checkpointing 卸载的是梯度检查点保存的内容："
                            "请同时开启 gradient_checkpointing")
        if self.cpu_offload_checkpointing and self.blocks_to_swap:  # as sd-scripts: one way to use system RAM
            raise RuleError("cpu_offload_checkpointing and blocks_to_swap both move memory to system RAM and cannot "
                            "be combined (as in sd-scripts): keep blocks_to_swap, it saves more",
                            "cpu_offload_checkpointing", "blocks_to_swap",
                            zh="cpu_offload_checkpointing 和 blocks_to_swap 都把显存挪到内存，不能同时使用"
                            "（与 sd-scripts 相同）：保留 blocks_to_swap，它省得更多")
        if self.blocks_to_swap and self.quantize_base != "none":  # packed weights carry state a plain move loses
            raise RuleError("blocks_to_swap moves plain or fp8 weights, not quantize_base's packed ones: use fp8_base "
                            "with blocks_to_swap (as sd-scripts does), or one of them alone", "blocks_to_swap",
                            "quantize_base", zh="blocks_to_swap 只能搬动普通或 fp8 权重，不能搬 quantize_base 打包后的"
                            "权重：请像 sd-scripts 那样用 fp8_base 配合 blocks_to_swap，或只用其中一个")
        return self


def length_defaults(given: Mapping[str, Any]) -> dict[str, Any]:
    """sd-scripts trains max_train_steps unless max_train_epochs is given: settings that name the steps and not the
    epochs leave the default epochs out (presets and the GUI apply this too, over the defaults)."""
    if given.get("max_train_steps") is not None and "max_train_epochs" not in given:
        return {"max_train_epochs": None}
    return {}
