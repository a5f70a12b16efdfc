"""What `check` and `train` both do before any model loads: readiness, dataset scan, step plan, outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainer.checks.advice import config_advice, gpu_facts
from trainer.common.errors import ConfigError, Problem, UserError
from trainer.common.places import folder_place_problems
from trainer.config import TrainConfig
from trainer.dataset.buckets import assign_bucket, bucket_limit_problems
from trainer.dataset.image_check import small_image_problems
from trainer.dataset.plan import Entry, StepPlan, build_entries, make_plan
from trainer.dataset.scan import DatasetScan, scan_dataset

MachineCheck = Callable[[TrainConfig, bool], list[Problem]]  # (config, cuda) -> what this machine cannot do for it
SAVE_BYTES = {"float": 4, "fp16": 2, "bf16": 2}  # per LoRA parameter: export.SAVE_DTYPES' sizes, without torch
LATENT_BYTES_PER_PIXEL = 1.0  # a cached latent at most: 16 float32 channels per 8x8 pixels (Flux; SD has 4)


@dataclass
class Preflight:
    scan: DatasetScan
    entries: list[Entry]
    plan: StepPlan
    warnings: list[str]


def run_preflight(config: TrainConfig, num_processes: int = 1, gpu: tuple[bool, bool] | None = None,
                  machine: MachineCheck | None = None) -> Preflight:
    """Raise ConfigError with every problem found, or return the plan the training will follow.

    gpu: advice.gpu_facts() when the caller knows them; None asks torch here. machine: machine_problems as the
    caller gets it; None runs it here (it imports torch). The GUI asks both of its worker process
    (trainer/run/worker.py), so its own process never imports torch."""
    cuda, bf16_supported = gpu or gpu_facts()
    problems = readiness_problems(config, cuda, machine)
    scan, entries, plan = scan_and_plan(config, num_processes)
    problems += dataset_problems(config, scan)
    if problems or plan is None:  # no plan: no train_data_dir (readiness names it) or scan errors
        raise ConfigError(problems)
    problems += place_problems(config, entries)
    problems += overwrite_problems(config, plan)
    if problems:
        raise ConfigError(problems)
    warnings = [str(p) for p in scan.problems if p.level != "error"]
    warnings += [advice.en for advice in config_advice(config, cuda=cuda, bf16_supported=bf16_supported)]
    return Preflight(scan, entries, plan, warnings + class_path_notes(config) + leftover_notes(config))


def leftover_notes(config: TrainConfig) -> list[str]:
    from trainer.training.checkpoints import leftovers

    found = leftovers(config)
    if not found:
        return []
    names = ", ".join(path.name for path in found[:3]) + (" ..." if len(found) > 3 else "")
    return [f"output_dir: {names} in {found[0].parent}: left by a run killed while saving; the next training of "
            "this config removes them"]


def class_path_notes(config: TrainConfig) -> list[str]:
    """The class paths the training will import (config.class_paths): named, since importing runs their code."""
    return [f"{key}: {path} is a class path: the training imports it, and so runs its module's code; nothing "
            "checked it. Train only if you trust where this config came from" for key, path in
            config.class_paths.items()]


def scan_and_plan(config: TrainConfig, num_processes: int = 1) -> tuple[DatasetScan, list[Entry], StepPlan | None]:
    """The dataset scan, its epoch entries and the step plan; no readiness checks and no torch, so the GUI's
    dataset check can call it. The plan is None when train_data_dir is empty or the scan found errors."""
    if not config.train_data_dir:
        return DatasetScan(), [], None
    scan = scan_dataset(Path(config.train_data_dir).expanduser(),
                        Path(config.reg_data_dir).expanduser() if config.reg_data_dir else None,
                        config.caption_extension)
    scan.problems += small_image_problems(scan, config.resolution_wh)  # from the sizes read: no file read again
    scan.problems += bucket_limit_problems(Path(config.train_data_dir).expanduser(), config.resolution_wh,
                                           config.enable_bucket, config.min_bucket_reso, config.max_bucket_reso,
                                           config.bucket_reso_steps)
    if scan.errors:
        return scan, [], None
    entries = build_entries(scan, lambda item: bucket_for(config, item.width, item.height))
    plan = make_plan(entries, scan, train_batch_size=config.train_batch_size,
                     gradient_accumulation_steps=config.gradient_accumulation_steps,
                     max_train_epochs=config.max_train_epochs, max_train_steps=config.max_train_steps,
                     num_processes=num_processes)
    return scan, entries, plan


def dataset_problems(config: TrainConfig, scan: DatasetScan) -> list[Problem]:
    """The scan's errors as Problems of train_data_dir or reg_data_dir."""
    return [Problem((_dataset_key(config, p.path),), str(p), zh=f"{p.path}：{p.reason_in('zh')}")
            for p in scan.errors]


def bucket_for(config: TrainConfig, width: int, height: int) -> tuple[int, int]:
    return assign_bucket(width, height, resolution=config.resolution_wh, enable_bucket=config.enable_bucket,
                         min_bucket_reso=config.min_bucket_reso, max_bucket_reso=config.max_bucket_reso,
                         bucket_reso_steps=config.bucket_reso_steps, bucket_no_upscale=config.bucket_no_upscale)


def readiness_problems(config: TrainConfig, cuda: bool | None = None,
                       machine: MachineCheck | None = None) -> list[Problem]:
    """Values a preset may leave empty but a run needs, and what this machine cannot do (machine: as
    run_preflight takes it)."""
    problems = []
    problems += model_source_problems(config)
    for key in ("network_weights", "resume", "vae", "ae", "clip_l", "t5xxl"):
        value = getattr(config, key)
        if value and not Path(value).expanduser().exists():
            problems.append(Problem((key,), f"'{value}' does not exist", "check the path", zh=f"'{value}' 不存在",
                                    hint_zh="请检查路径"))
        elif value:
            problems += input_file_problems(key, Path(value).expanduser())
    problems += prompt_problems(config)
    if not config.train_data_dir:
        problems.append(Problem(("train_data_dir",), "empty", "pick the folder that holds the N_name image folders",
                                zh="未填写", hint_zh="请选择装着 N_名称 图片文件夹的那个上层文件夹"))
    return problems + (machine or machine_problems)(config, gpu_facts()[0] if cuda is None else cuda)


def input_file_problems(key: str, path: Path) -> list[Problem]:
    """A file (or resume state folder) the run will load, read as far as its headers: cut short, pickled code,
    not a model file, a broken state."""
    from trainer.families.detect import file_damage
    from trainer.training.checkpoints import state_problems

    if path.is_dir():
        return state_problems(path) if key == "resume" else []
    damage = file_damage(path)
    return [Problem((key,), f"'{path}' is {damage}", zh=f"'{path}' 已损坏：{damage}")] if damage else []


def prompt_problems(config: TrainConfig) -> list[Problem]:
    """The preview prompts as the training will read them: the file, its encoding, each line's options."""
    from trainer.training.sampling import load_prompts

    try:
        load_prompts(config.sample_prompts, config.resolution_wh)
    except UserError as exc:
        return exc.problems
    return []


def machine_problems(config: TrainConfig, cuda: bool) -> list[Problem]:
    """What this machine cannot do for the config: fp16 without CUDA, the quantization, importing the optimizer,
    launching the processes on its GPUs. Imports torch (the GUI asks its worker process: trainer/checks/service.py)."""
    import torch

    from trainer.run.launch import launch_problems
    from trainer.training.optim import optimizer_problems
    from trainer.training.quantize import quantize_problems

    return (_device_problems(config.mixed_precision, cuda) + quantize_problems(config.quantize_base)
            + optimizer_problems(config) + launch_problems(config, torch.cuda.device_count() if cuda else 0))


def model_source_problems(config: TrainConfig) -> list[Problem]:
    from trainer.families.detect import cut_short, detect_family

    key, source = "pretrained_model_name_or_path", config.pretrained_model_name_or_path
    if not source:
        return [Problem((key,), "empty", "pick the base model: a .safetensors checkpoint, a diffusers folder or a "
                        "repo id", zh="未填写",
                        hint_zh="请选择底模：.safetensors 模型文件、diffusers 文件夹或 repo id")]
    path = Path(source).expanduser()
    if path.is_file():
        return _model_file_problems(config, path)
    looks_like_repo_id = not path.is_absolute() and not source.startswith((".", "~")) and source.count("/") == 1
    if not path.is_dir() and not looks_like_repo_id:
        return [Problem((key,), f"'{source}' does not exist", "pick a .safetensors checkpoint or a diffusers model "
                        "folder, or give a Hugging Face repo id like owner/name", zh=f"'{source}' 不存在",
                        hint_zh="请选择 .safetensors 模型文件或 diffusers 模型文件夹，或填 Hugging Face 的 repo id，"
                        "例如 owner/name")]
    damaged = [(part, cut_short(part)) for part in sorted(path.glob("*/*.safetensors"))] if path.is_dir() else []
    for part, damage in damaged:
        if damage:  # a part of a diffusers folder, e.g. unet/diffusion_pytorch_model.safetensors, cut short
            return [Problem((key,), f"'{part}' is {damage}", zh=f"'{part}' 已损坏：{damage}")]
    if path.is_dir() and not (path / "model_index.json").is_file() and detect_family(str(path)) is None:
        return [Problem((key,), f"cannot load '{source}': a folder without a diffusers model in it (no "
                        "model_index.json, unet/ or transformer/)", "pick the model's folder itself, or its "
                        ".safetensors checkpoint",
                        zh=f"无法加载 '{source}'：这个文件夹里没有 diffusers 模型（没有 model_index.json、unet/ 或 "
                        "transformer/）", hint_zh="请选择模型文件夹本身，或它的 .safetensors 文件")]
    return []


def _model_file_problems(config: TrainConfig, path: Path) -> list[Problem]:
    """A single file must be a full model (or Flux's transformer with its split files) of the chosen family;
    read from the file's header only, so `check` stays fast."""
    from trainer.families.detect import base_model_advice, cut_short, describe_checkpoint
    from trainer.families.table import FAMILIES

    key, damage = "pretrained_model_name_or_path", cut_short(path)
    if damage:
        return [Problem((key,), f"'{path}' is {damage}", zh=f"'{path}' 已损坏：{damage}")]
    found = describe_checkpoint(path)
    if found.kind not in ("model", "transformer") or found.family is None:
        return [Problem((key,), f"'{path}' {base_model_advice(path)}",
                        zh=f"'{path}' 不能直接作为底模：{base_model_advice(path)}")]
    family = FAMILIES[found.family]
    if config.model_family not in ("auto", found.family):
        return [Problem(("model_family",), f"set to {config.model_family}, but '{path}' is {found.detail} "
                        f"({family.label})", "set model_family to auto",
                        zh=f"设成了 {config.model_family}，但 '{path}' 是 {found.detail}（{family.label}）",
                        hint_zh="请把 model_family 设为 auto")]
    if found.kind == family.denoiser:  # the denoiser alone: the other parts come in files of their own
        keys = list(family.separate_files.values())
        missing = [name for name in keys if not getattr(config, name)]
        if missing:
            return [Problem(tuple(missing), f"empty, but '{path.name}' is a {found.detail} without them",
                            f"give the {', '.join(keys)} files (as ComfyUI keeps them in models/vae and "
                            "models/clip)",
                            zh=f"未填写，但 '{path.name}' 是单独的 {found.detail}，不含这些部分",
                            hint_zh=f"请填上 {', '.join(keys)} 文件（ComfyUI 把它们放在 models/vae 和 models/clip）")]
    return []


def _device_problems(mixed_precision: str, cuda: bool) -> list[Problem]:
    """fp16 training needs CUDA; bf16 without native support runs (emulated, slowly): advice.py says so."""
    if mixed_precision == "fp16" and not cuda:
        return [Problem(("mixed_precision",), "'fp16' needs an NVIDIA GPU (CUDA), and none was found",
                        "use 'no' on the CPU", zh="'fp16' 需要 NVIDIA 显卡（CUDA），但没有找到",
                        hint_zh="用 CPU 训练时请选 'no'")]
    return []


def place_problems(config: TrainConfig, entries: list[Entry]) -> list[Problem]:
    """Where the run writes, before any model loads: output_dir (its LoRA files and run folders), and the dataset
    folders when caches go next to the images; each a folder it can write, with room for one LoRA file and the
    latent caches."""
    problems = folder_place_problems(Path(config.output_dir), "output_dir", _lora_bytes(config))
    key = "cache_latents_to_disk" if config.cache_latents_to_disk else \
        "cache_text_encoder_outputs_to_disk" if config.cache_text_encoder_outputs_to_disk else None
    if key is None:
        return problems
    images = {(entry.item.path, entry.bucket) for entry in entries}
    variants = 2 if config.flip_aug else 1
    for folder in sorted({path.parent for path, _ in images}):
        pixels = sum(w * h for path, (w, h) in images if path.parent == folder) if config.cache_latents_to_disk else 0
        found = folder_place_problems(folder, key, int(pixels * variants * LATENT_BYTES_PER_PIXEL))
        if found:  # the first folder that cannot hold its caches stands for the others
            return problems + found
    return problems


def _lora_bytes(config: TrainConfig) -> int:
    """One LoRA file's size from the family's layer counts (checks/memory.py); 0 when the family is not known."""
    from trainer.checks.memory import trained_parameters
    from trainer.families.detect import detect_family
    from trainer.families.table import FAMILIES

    family = config.model_family
    if family not in FAMILIES:
        try:
            family = detect_family(str(Path(config.pretrained_model_name_or_path).expanduser()))
        except (OSError, ValueError):
            return 0
    return trained_parameters(config, family) * SAVE_BYTES[config.save_precision] if family in FAMILIES else 0


def overwrite_problems(config: TrainConfig, plan: StepPlan) -> list[Problem]:
    from trainer.training.checkpoints import planned_outputs

    if config.overwrite:
        return []
    existing = [p for p in planned_outputs(config, plan.epochs, plan.total_steps) if p.exists()]
    if not existing:
        return []
    names = ", ".join(str(p) for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
    return [Problem(("output_name",), f"{names} already exists from an earlier run", "choose another output_name "
                    "or output_dir, or set overwrite: true to replace it",
                    zh=f"{names} 已经存在（之前训练的结果）",
                    hint_zh="请换一个 output_name 或 output_dir"
                    "，或勾选 路径 › 输出 › 高级选项 里的 overwrite 来替换它")]


def _dataset_key(config: TrainConfig, path: Path) -> str:
    if config.reg_data_dir and Path(path).is_relative_to(Path(config.reg_data_dir).expanduser()):
        return "reg_data_dir"
    return "train_data_dir"
