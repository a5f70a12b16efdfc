"""Paths tab: the base model, the dataset and where results go."""

from __future__ import annotations

from pydantic import field_validator

from .base import SchemaPart, field


class PathsFields(SchemaPart):
    pretrained_model_name_or_path: str = field(
        "", "paths", "model",
        "Base model: a local diffusers folder, or a Hugging Face repo id (downloaded when online). Pick the "
        "model you will generate with, or its ancestor: a LoRA works best on the model it was trained on.",
        "底模：本地 diffusers 模型文件夹，或联网时的 Hugging Face 仓库名。选你之后出图用的模型或它的上游模型，"
        "LoRA 在训练它的底模上效果最好。", metadata=False)
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
        metadata=False)
    reg_data_dir: str | None = field(
        None, "paths", "dataset",
        "Optional regularization images (same N_name layout): generic images of the class. They are repeated "
        "to match the training images and keep the class from drifting toward your subject.",
        "可选的正则化图片（同样的 N_名称 结构），放同类别的普通图片。它们会重复到与训练图片数量一致，"
        "防止整个类别都变成你的角色（过拟合）。", metadata=False)
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
        "保存 LoRA 文件和每次运行记录的文件夹。", metadata=False)
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
            raise ValueError("must not be empty, e.g. .txt")
        return value if value.startswith(".") else "." + value

    @field_validator("output_name")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        if any(c in value for c in '/\\:*?"<>|') or value.strip(" .") != value:
            raise ValueError('must be a plain file name without / \\ : * ? " < > | and without leading or '
                             "trailing dots or spaces")
        return value
