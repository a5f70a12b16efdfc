"""Paths tab: the base model, the dataset and where results go."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from trainer.common.errors import RuleError
from trainer.config.schema.base import SchemaPart, field
from trainer.families.table import FAMILIES

MODEL_FAMILIES = ("auto", *FAMILIES)


class PathsFields(SchemaPart):
    pretrained_model_name_or_path: str = field(
        "", "paths", "model",
        "Base model: a single .safetensors checkpoint (as downloaded from civitai), a local diffusers folder, "
        "or a Hugging Face repo id (downloaded when online). For Flux, the transformer file (flux1-dev.safetensors) "
        "with ae, clip_l and t5xxl below. Pick the model you will generate with, or its ancestor: a LoRA works "
        "best on the model it was trained on.",
        "底模：单个 .safetensors 模型文件（如从 civitai 下载的）、本地 diffusers 模型文件夹，或联网时的 Hugging Face "
        "仓库名。Flux 填 transformer 文件（flux1-dev.safetensors），并在下方填 ae、clip_l、t5xxl。选你之后出图用的"
        "模型或它的上游模型，LoRA 在训练它的底模上效果最好。", metadata=False, machine=True, path="any")
    model_family: Literal[MODEL_FAMILIES] = field(  # type: ignore[valid-type]
        "auto", "paths", "model",
        "Which model the base is: auto detects it from the file or folder; sd1 (SD1.x), sd2 (SD2.x), sdxl "
        "(SDXL and its derivatives such as Pony and Illustrious), flux (Flux.1 dev or schnell). A value that "
        "does not match the model is refused.",
        "底模属于哪一类：auto 根据文件或文件夹自动识别；sd1（SD1.x）、sd2（SD2.x）、sdxl（SDXL 及 Pony、Illustrious "
        "等衍生模型）、flux（Flux.1 dev 或 schnell）。与模型不符时会拒绝开始。", metadata=False)
    vae: str | None = field(
        None, "paths", "model",
        "Optional VAE to use instead of the base model's: a .safetensors file or a diffusers vae folder (e.g. the "
        "fixed sdxl-vae-fp16-fix). For Flux use ae.",
        "可选：替换底模自带 VAE 的文件（.safetensors）或 diffusers vae 文件夹（例如修复版 sdxl-vae-fp16-fix）。"
        "Flux 请用 ae。", advanced=True, metadata=False, machine=True, path="any")
    ae: str | None = field(
        None, "paths", "model", "Flux: the autoencoder file (ae.safetensors) when the base model is a transformer file.",
        "Flux：底模是单独的 transformer 文件时，自编码器文件（ae.safetensors）。",
        metadata=False, machine=True, path="file")
    clip_l: str | None = field(
        None, "paths", "model", "Flux: the CLIP-L text encoder file (clip_l.safetensors).",
        "Flux：CLIP-L 文本编码器文件（clip_l.safetensors）。", metadata=False, machine=True, path="file")
    t5xxl: str | None = field(
        None, "paths", "model", "Flux: the T5-XXL text encoder file (t5xxl_fp16.safetensors or an fp8 version).",
        "Flux：T5-XXL 文本编码器文件（t5xxl_fp16.safetensors 或 fp8 版本）。",
        metadata=False, machine=True, path="file")
    base_model_config: str | None = field(
        None, "paths", "model",
        "For a single-file base model: a diffusers folder (or repo id) whose configs and tokenizers describe it. "
        "Empty = the configs shipped with Danlu for the detected family; tokenizers are then fetched once "
        "while online.",
        "底模为单文件时：描述它结构的 diffusers 文件夹（或仓库名），提供配置和分词器。留空则使用 Danlu 自带的该类"
        "模型配置，分词器需联网下载一次。", advanced=True, metadata=False, machine=True, path="folder")
    v2: bool | None = field(
        None, "paths", "model",
        "The base model is Stable Diffusion 2.x. Empty = detect from the model (its text encoder).",
        "底模是否为 SD 2.x。留空则根据模型的文本编码器自动识别。", advanced=True)
    v_parameterization: bool | None = field(
        None, "paths", "model",
        "The model predicts v (SD2.x 768-v models) instead of noise. Empty = read the model's scheduler "
        "config. A wrong value gives washed-out or burnt samples.",
        "模型预测 v 而不是噪声（SD2.x 768-v 模型）。留空则读取模型自带的调度器配置。设错会让预览图发灰或过曝。",
        advanced=True)
    train_data_dir: str = field(
        "", "paths", "dataset",
        "Folder holding sub-folders named N_name: N is how often each image repeats per epoch, name the "
        "words used for images without a caption file.",
        "训练集文件夹，里面是名为 N_名称 的子文件夹：N 是每张图每轮重复的次数，名称用作没有标注文件的图片的标注。",
        metadata=False, machine=True, path="folder")
    reg_data_dir: str | None = field(
        None, "paths", "dataset",
        "Optional regularization images (same N_name layout): generic images of the class. They are repeated "
        "to match the training images and keep the class from drifting toward your subject.",
        "可选的正则化图片（同样的 N_名称 结构），放同类别的普通图片。它们会重复到与训练图片数量一致，"
        "防止整个类别都变成你的角色（过拟合）。", metadata=False, machine=True, path="folder")
    prior_loss_weight: float = field(
        1.0, "paths", "dataset",
        "Loss weight of regularization images; 1 treats them like training images, lower lets your subject "
        "dominate.", "正则化图片的损失权重。1 与训练图同等对待，调低则训练对象的影响更强。", advanced=True, ge=0)
    caption_extension: str = field(
        ".txt", "paths", "dataset",
        "Extension of the caption file next to each image (.txt from most taggers, .caption in sd-scripts).",
        "每张图片旁标注文件的扩展名（打标工具多用 .txt，sd-scripts 默认 .caption）。")
    output_dir: str = field(
        "./outputs", "paths", "output", "Folder for the LoRA files and the run folders.",
        "保存 LoRA 文件和每次运行记录的文件夹。", metadata=False, machine=True, path="folder")
    output_name: str = field(
        "lora", "paths", "output", "File name of the LoRA, without extension.", "LoRA 文件名（不含扩展名）。",
        min_length=1, max_length=128)
    overwrite: bool = field(
        False, "paths", "output",
        "Allow replacing LoRA files of an earlier run with the same name. Off: such a run is refused.",
        "允许覆盖之前同名训练留下的 LoRA 文件。关闭时遇到同名文件会拒绝开始。", advanced=True, metadata=False)
    training_comment: str = field(
        "", "paths", "output", "Free text stored in the LoRA's metadata (ss_training_comment), e.g. trigger words.",
        "写入 LoRA 元数据的备注（ss_training_comment），例如触发词。")

    @field_validator("caption_extension")
    @classmethod
    def _dotted_extension(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise RuleError("must not be empty, e.g. .txt", zh="不能为空，例如 .txt")
        if any(c in value for c in '/\\') or value.strip(".") == "":
            raise RuleError("must be a file name ending without a folder, e.g. .txt",
                            zh="应为文件扩展名，不带文件夹，例如 .txt")
        return value if value.startswith(".") else "." + value

    @field_validator("output_name")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        if any(c in value for c in '/\\:*?"<>|') or value.strip(" .") != value:
            raise RuleError('must be a plain file name without / \\ : * ? " < > | and without leading or '
                            "trailing dots or spaces",
                            zh='应为普通文件名：不含 / \\ : * ? " < > |，开头和结尾不能是点或空格')
        return value
