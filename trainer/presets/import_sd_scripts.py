"""sd-scripts' `--config_file` TOML (argument names, sections ignored) and `--dataset_config` TOML.

Danlu's keys are sd-scripts' argument names, so most fields map as they are. The rest: options Danlu has no
equivalent for (each with its reason), network_args entries Danlu cannot train, and the places where an omitted
key means something different in sd-scripts than in Danlu (SD_SCRIPTS_DEFAULTS).
"""

from __future__ import annotations

from typing import Any

from trainer.adapters.sd_scripts import ARG_KEYS, LYCORIS_ALGOS, NETWORK_MODULES
from trainer.config import TrainConfig
from trainer.config.io import NOT_NEEDED, NOT_NEEDED_ZH
from trainer.dataset.scan import parse_folder_name
from trainer.presets.collector import Collector, coerce, is_off
from trainer.presets.paths import name_of, parent_of, with_name

_LOGS = (NOT_NEEDED["log_with"], NOT_NEEDED_ZH["log_with"])
_DEEPSPEED = ("DeepSpeed is not supported: Danlu trains with DDP (num_processes)",
              "不支持 DeepSpeed：丹炉用 DDP 多卡训练（num_processes）")
# (reason, its Chinese) -> the sd-scripts options it is the reason for
_GROUPS: dict[tuple[str, str], tuple[str, ...]] = {
    _LOGS: ("logging_dir", "log_with", "log_prefix", "log_tracker_name", "log_tracker_config", "log_config",
            "wandb_api_key", "wandb_run_name"),
    (NOT_NEEDED["mem_eff_attn"], NOT_NEEDED_ZH["mem_eff_attn"]): ("mem_eff_attn",),
    ("Danlu saves to output_dir only; upload the file yourself", "丹炉只保存到 output_dir；上传请自己来"): (
        "huggingface_repo_id", "huggingface_repo_type", "huggingface_path_in_repo", "huggingface_token",
        "huggingface_repo_visibility", "save_state_to_huggingface", "resume_from_huggingface", "async_upload"),
    ("Danlu places the models in memory itself", "丹炉自己安排模型放在显存还是内存"): ("lowram", "highvram", "lowvram"),
    _DEEPSPEED: ("deepspeed", "zero_stage"),
    ("weighted captions ((word:1.2)) are not supported", "不支持带权重的标注（(word:1.2)）"): ("weighted_captions",),
    ("token warm-up is not supported", "不支持 token 预热"): ("token_warmup_min", "token_warmup_step"),
    ("face crop augmentation is not supported", "不支持人脸裁剪增强"): ("face_crop_aug_range",),
    ("import the dataset TOML on its own (python -m trainer preset import DATASET.toml)",
     "请单独导入数据集 TOML（python -m trainer preset import DATASET.toml）"): ("dataset_config",),
    ("fine-tuning (metadata JSON) datasets are not supported; Danlu reads N_name folders",
     "不支持微调用的（元数据 JSON）数据集；丹炉读取 N_名称 文件夹"): ("in_json", "dataset_repeats", "metadata_file"),
    ("not supported (masked / alpha-mask loss)", "不支持（蒙版 / alpha 蒙版 loss）"): ("masked_loss", "alpha_mask"),
    ("Danlu does not stop text-encoder training part-way", "丹炉不会中途停止训练文本编码器"): (
        "stop_text_encoder_training",),
    ("a DreamBooth-script option; LoRA training pads tokens as usual",
     "DreamBooth 脚本的选项；LoRA 训练照常补齐 token"): ("no_token_padding",),
    ("use save_every_n_epochs", "请用 save_every_n_epochs"): ("save_n_epoch_ratio",),
    ("a command-line helper of sd-scripts", "sd-scripts 的命令行辅助选项"): ("config_file", "output_config",
                                                                         "debug_dataset"),
    ("Danlu does not write modelspec title/author metadata", "丹炉不写 modelspec 的标题/作者元数据"): (
        "metadata_title", "metadata_author", "metadata_description", "metadata_license", "metadata_tags"),
    ("merging LoRAs into the base model before training is not supported", "不支持训练前把 LoRA 合并进底模"): (
        "base_weights", "base_weights_multiplier"),
    ("LoRA+ learning-rate ratios are not supported", "不支持 LoRA+ 的学习率比例"): (
        "loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio"),
    ("block-wise learning rates and dims are not supported", "不支持分层学习率和分层 dim"): (
        "down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_lr_zero_threshold", "block_dims", "block_alphas",
        "conv_block_dims", "conv_block_alphas"),
    ("Danlu trains with the LoRA at full strength (multiplier 1)", "丹炉训练时 LoRA 始终是全强度（倍率 1）"): (
        "network_multiplier",),
    ("Danlu resumes from a saved state folder (resume)", "丹炉从保存的状态文件夹继续训练（resume）"): (
        "initial_epoch", "initial_step", "skip_until_initial_step"),
    ("validation loss is not supported", "不支持验证集 loss"): (
        "validation_split", "validation_seed", "validate_every_n_steps", "validate_every_n_epochs",
        "max_validation_steps"),
    ("a Flux.1 memory option Danlu does not have", "丹炉没有这个 Flux.1 省显存选项"): ("split_mode", "mem_eff_save"),
    ("Danlu checks its caches by their content", "丹炉按内容检查缓存"): ("skip_cache_check", "cache_info"),
    ("Danlu loads images with its own resizing", "丹炉用自己的方式缩放图片"): ("resize_interpolation",),
}
NO_EQUIVALENT = {key: reason for reason, keys in _GROUPS.items() for key in keys}
OFF_DEFAULTS = {"network_multiplier": 1.0, "token_warmup_min": 1}  # the values that mean "not used"
# Danlu always encodes with the VAE in float32 (fp16 VAEs overflow), which is what these ask for.
ALWAYS_LIKE_DANLU = ("no_half_vae", "sdxl_no_half_vae")
LEGACY_OPTIMIZERS = {"use_8bit_adam": "AdamW8bit", "use_lion_optimizer": "Lion"}  # before optimizer_type
RENAMES = {"caption_extention": "caption_extension"}  # sd-scripts' old spelling, still accepted there
# Where sd-scripts' default for an omitted key trains differently from Danlu's: an omitted key gets sd-scripts'.
SD_SCRIPTS_DEFAULTS = {"learning_rate": 2e-6, "lr_scheduler": "constant", "network_dim": 4, "network_alpha": 1.0,
                       "enable_bucket": False, "mixed_precision": "no", "caption_extension": ".caption",
                       "cache_latents": False}
SD_SCRIPTS_MAX_TRAIN_STEPS = 1600  # sd-scripts' default when neither epochs nor steps are given
_ARG_NAMES = ("algo", "preset", *ARG_KEYS)
_OFF_TEXT = ("", "false", "0", "0.0", "none")


def flatten_sections(data: dict[str, Any]) -> dict[str, Any]:
    """sd-scripts reads a config TOML's keys and ignores its [sections] (a later section's key wins)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(flatten_sections(value) if isinstance(value, dict) else {key: value})
    return flat


def import_sd_scripts(data: dict[str, Any]) -> Collector:
    flat = flatten_sections(data)
    out = Collector(flat)
    map_sd_scripts_keys(out, flat)
    fill_sd_scripts_defaults(out, flat)
    return out


def map_sd_scripts_keys(out: Collector, flat: dict[str, Any], prefix: str = "") -> None:
    """Each sd-scripts argument: a Danlu key as it is, or unmapped with its reason. prefix: how the fields are
    named to the user when they sit inside another field (kohya_ss's additional_parameters)."""
    out.raw.update({f"{prefix}{key}": value for key, value in flat.items()})
    if "network_module" in flat or "network_args" in flat:
        args = [(str(entry), f"{prefix}network_args") for entry in as_entries(flat.get("network_args"))]
        map_network(out, flat.get("network_module"), args, f"{prefix}network_module")
        if "network_args" in flat:
            out.keep(f"{prefix}network_args")  # an empty list too
    for key, value in flat.items():
        source, name = f"{prefix}{key}", RENAMES.get(key, key)
        if key in ("network_module", "network_args"):
            continue
        if name in TrainConfig.model_fields:
            set_plain(out, name, value, source)
        elif key in LEGACY_OPTIMIZERS:
            _legacy_optimizer(out, key, value, flat, source)
        elif key in ALWAYS_LIKE_DANLU:
            out.keep(source)
        elif key in NO_EQUIVALENT:
            skip_unless_off(out, key, value, NO_EQUIVALENT[key], source)
        else:
            out.skip(source, value, "not an option Danlu has (no equivalent)", "丹炉没有这个选项（没有对应项）")


def set_plain(out: Collector, key: str, value: Any, source: str) -> None:
    """A Danlu key written the sd-scripts way: an empty path or a false store_true flag means "not given"."""
    default = TrainConfig.model_fields[key].default
    if (value == "" and default is None) or (value is False and key in ("v2", "v_parameterization")):
        out.keep(source)  # v2: false would be refused for SDXL/Flux, where sd-scripts ignores it
    else:
        out.set(key, coerce(key, value), source)


def skip_unless_off(out: Collector, key: str, value: Any, reason: tuple[str, str],
                    source: str | None = None) -> None:
    """An option Danlu lacks: switched off it changes nothing (taken); switched on it is listed (reason: in English
    and Chinese)."""
    if is_off(value) or OFF_DEFAULTS.get(key) == value:
        out.keep(source or key)
    else:
        out.skip(source or key, value, *reason)


def as_entries(value: Any) -> list[str]:
    """sd-scripts' list of key=value, or one space-separated string as the GUIs write it."""
    if value is None:
        return []
    return str(value).replace('"', "").split() if isinstance(value, str) else [str(v) for v in value]


def map_network(out: Collector, module: str | None, args: list[tuple[str, str]],
                module_source: str = "network_module") -> None:
    """network_module and its network_args; args: (entry, the foreign field it came from). An entry Danlu cannot
    train is listed on its own and the others map; a network Danlu cannot train is listed with all its args."""
    algos = [entry.partition("=")[2] for entry, _ in args if entry.partition("=")[0] == "algo"]
    unknown_algo = [algo for algo in algos if algo.lower() not in LYCORIS_ALGOS]
    if (module is not None and module not in NETWORK_MODULES) or unknown_algo:
        what = f"LyCORIS algo {unknown_algo[0]}" if unknown_algo else f"network_module {module}"
        reason = (f"Danlu does not train {what} (it trains LoRA, LoCon, LoHa, LoKr and DyLoRA: network_module "
                  f"{', '.join(NETWORK_MODULES)}); network_type stays lora",
                  f"丹炉不训练 {what}（能训练 LoRA、LoCon、LoHa、LoKr 和 DyLoRA：network_module "
                  f"{', '.join(NETWORK_MODULES)}）；network_type 保持 lora")
        if module is not None:
            out.skip(module_source, module, *reason)
        for source in dict.fromkeys(source for _, source in args):
            out.skip(source, out.raw.get(source), *reason)
        return
    if module is not None:
        out.set("network_module", module, module_source)
    kept, sources = [], []
    for entry, source in args:
        name, _, value = entry.partition("=")
        label = f"{source}.{name}" if source.endswith("network_args") else source
        reason = _network_arg_problem(name, value)
        if reason is None:
            kept.append(entry)
            sources.append(source)
        elif value.strip().lower() in _OFF_TEXT and name not in _ARG_NAMES:
            out.keep(label)  # a LyCORIS switch left off (use_tucker=False, ...): Danlu does the same
        else:
            out.skip(label, entry, *reason)
    if kept:
        out.set("network_args", kept, *sources)  # one source per entry, so a refused entry can go alone
    for _, source in args:
        out.keep(source)


FULL_PRESET_ONLY = ("Danlu adapts LyCORIS's full preset only (attention, MLP and ResNet conv layers)",
                    "丹炉只适配 LyCORIS 的 full 预设（注意力层、MLP 和 ResNet 卷积层）")


def _network_arg_problem(name: str, value: str) -> tuple[str, str] | None:
    """Why a network_args entry cannot be taken (in English and Chinese), or None."""
    if name == "preset" and value != "full":
        return FULL_PRESET_ONLY
    if name not in _ARG_NAMES:
        return "a network argument Danlu does not have", "丹炉没有这个网络参数"
    return None


def _legacy_optimizer(out: Collector, key: str, value: Any, flat: dict[str, Any], source: str) -> None:
    if value and not flat.get("optimizer_type"):
        out.set("optimizer_type", LEGACY_OPTIMIZERS[key], source)
    else:
        out.keep(source)  # off, or optimizer_type names the optimizer


def fill_sd_scripts_defaults(out: Collector, flat: dict[str, Any]) -> None:
    """Keys the file leaves to sd-scripts' defaults, where those train differently from Danlu's: set to
    sd-scripts' values so the run is the same (listed in metadata["sd_scripts_defaults"])."""
    filled = {key: value for key, value in SD_SCRIPTS_DEFAULTS.items()
              if key not in out.settings and key not in flat}
    if {"unet_lr", "text_encoder_lr"} <= set(out.settings):
        filled.pop("learning_rate", None)  # both parts have their own rate: learning_rate is not used
    if not {"max_train_epochs", "max_train_steps"} & set(flat):
        filled.update(max_train_epochs=None, max_train_steps=SD_SCRIPTS_MAX_TRAIN_STEPS)
    for key, value in filled.items():
        out.set(key, value)
    if filled:
        out.metadata["sd_scripts_defaults"] = filled


# --- dataset config ([general], [[datasets]], [[datasets.subsets]]) ----------------------------------------
# Dataset-level options -> the Danlu key of the same meaning.
DATASET_KEYS = {"resolution": "resolution", "batch_size": "train_batch_size", "enable_bucket": "enable_bucket",
                "min_bucket_reso": "min_bucket_reso", "max_bucket_reso": "max_bucket_reso",
                "bucket_reso_steps": "bucket_reso_steps", "bucket_no_upscale": "bucket_no_upscale"}
# Subset options Danlu has as global keys, with sd-scripts' default (what an omitted one means).
SUBSET_KEYS = {"shuffle_caption": False, "keep_tokens": 0, "keep_tokens_separator": "", "caption_separator": ",",
               "secondary_separator": "", "enable_wildcard": False, "caption_prefix": "", "caption_suffix": "",
               "caption_dropout_rate": 0.0, "caption_dropout_every_n_epochs": 0, "caption_tag_dropout_rate": 0.0,
               "color_aug": False, "flip_aug": False, "random_crop": False, "caption_extension": ".caption"}
SUBSET_FOLDER_KEYS = ("image_dir", "num_repeats", "class_tokens", "is_reg")


def import_sd_scripts_dataset(data: dict[str, Any]) -> Collector:
    levels = _dataset_levels(data)
    out = Collector({f"{prefix}{key}": value for prefix, options in levels for key, value in options.items()})
    for key, value in data.items():
        if key not in ("general", "datasets"):
            out.skip(key, value, "not a dataset-config section ([general] or [[datasets]])",
                     "不是数据集配置的小节（[general] 或 [[datasets]]）")
    subsets = [(prefix, _effective(levels, prefix)) for prefix, _ in levels if ".subsets." in prefix]
    handled = {*DATASET_KEYS, *SUBSET_KEYS, *SUBSET_FOLDER_KEYS, "subsets"}
    _agreeing(out, levels, [(p, _effective(levels, p)) for p, _ in levels if p.count(".") == 2],
              {key: (danlu, None) for key, danlu in DATASET_KEYS.items()}, "dataset")
    _agreeing(out, levels, subsets, {key: (key, default) for key, default in SUBSET_KEYS.items()}, "subset")
    for is_reg, target in ((False, "train_data_dir"), (True, "reg_data_dir")):
        _folders(out, [(p, o) for p, o in subsets if bool(o.get("is_reg")) == is_reg], target)
    for prefix, options in levels:
        for key, value in options.items():
            if key not in handled:
                reason = NO_EQUIVALENT.get(key, ("not a dataset option Danlu has (no equivalent)",
                                                 "丹炉没有这个数据集选项（没有对应项）"))
                skip_unless_off(out, key, value, reason, f"{prefix}{key}")
    return out


def _dataset_levels(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(dotted prefix, the options written at that level): general, each dataset, each of its subsets."""
    levels = [("general.", dict(data.get("general") or {}))]
    for i, dataset in enumerate(data.get("datasets") or []):
        levels.append((f"datasets.{i}.", {k: v for k, v in dataset.items() if k != "subsets"}))
        levels += [(f"datasets.{i}.subsets.{j}.", dict(subset)) for j, subset in enumerate(dataset.get("subsets", []))]
    return levels


def _effective(levels: list[tuple[str, dict[str, Any]]], prefix: str) -> dict[str, Any]:
    """A level's options with what it inherits: general, then its dataset, then itself (sd-scripts' fallback)."""
    chain = [options for other, options in levels if prefix.startswith(other) or other == "general."]
    merged: dict[str, Any] = {}
    for options in chain:
        merged.update(options)
    return merged


def _agreeing(out: Collector, levels: list[tuple[str, dict[str, Any]]], units: list[tuple[str, dict[str, Any]]],
              keys: dict[str, tuple[str, Any]], what: str) -> None:
    """A per-dataset or per-subset option becomes one Danlu key when every dataset/subset has the same value."""
    for key, (danlu, default) in keys.items():
        written = [f"{prefix}{key}" for prefix, options in levels if key in options]
        if not written:
            continue
        values = [options.get(key, default) for _, options in units] or [_effective(levels, "general.")[key]]
        if all(value == values[0] for value in values):
            value = values[0]
            out.set(danlu, "{},{}".format(*value) if isinstance(value, list) else value, *written)
        else:
            for source in written:
                out.skip(source, out.raw[source], f"differs between {what}s, and Danlu has one {danlu} for all; "
                                                  "train them separately or choose one value",
                         f"各个 {what} 的取值不同，而丹炉所有数据只有一个 {danlu}；请分开训练，或统一成一个值")


def _folders(out: Collector, subsets: list[tuple[str, dict[str, Any]]], target: str) -> None:
    """Subsets -> train_data_dir (or reg_data_dir): their shared parent, when each folder is named N_name with
    N = num_repeats, since Danlu reads the repeats and class tokens from the folder name."""
    if not subsets:
        return
    parents = {parent_of(str(options["image_dir"])) for _, options in subsets if "image_dir" in options}
    clash = target == "reg_data_dir" and parents == {out.settings.get("train_data_dir")}
    for prefix, options in subsets:
        sources = [f"{prefix}{key}" for key in SUBSET_FOLDER_KEYS if f"{prefix}{key}" in out.raw]
        if len(parents) != 1 or clash:
            why = (("shares its parent with the training folders; Danlu reads every N_name folder of "
                    "train_data_dir as training data, so move the regularisation folders under their own parent",
                    "与训练文件夹在同一个上层文件夹里；丹炉会把 train_data_dir 下每个 N_名称 文件夹都当作训练数据，"
                    "请把正则化文件夹移到它们自己的上层文件夹下") if clash else
                   (f"the {target} subsets lie in different folders ({', '.join(sorted(parents))}); Danlu reads "
                    "one folder of N_name subfolders, so move them under one parent",
                    f"{target} 的子集分散在不同的文件夹里（{', '.join(sorted(parents))}）；丹炉读取的是一个装着"
                    " N_名称 子文件夹的文件夹，请把它们移到同一个上层文件夹下"))
            for source in sources:
                out.skip(source, out.raw[source], *why)
            continue
        if "image_dir" in options:
            _folder_name(out, prefix, options)
        for source in sources:
            out.keep(source)
    if len(parents) == 1 and not clash:
        out.set(target, parents.pop(), *(f"{prefix}image_dir" for prefix, _ in subsets))


def _folder_name(out: Collector, prefix: str, options: dict[str, Any]) -> None:
    """List the subset's num_repeats / class_tokens when its folder name says something else."""
    folder = str(options.get("image_dir", ""))
    repeats, tokens = options.get("num_repeats", 1), options.get("class_tokens")
    parsed = parse_folder_name(name_of(folder))
    wanted = f"{repeats}_{tokens if tokens is not None else (parsed[1] if parsed else name_of(folder))}"
    rename = f"rename {folder} to {with_name(folder, wanted)}"
    rename_zh = f"请把 {folder} 改名为 {with_name(folder, wanted)}"
    if parsed is None:
        out.skip(f"{prefix}image_dir", folder, f"Danlu reads the repeat count from the folder name "
                                                     f"(N_name), and this one has none: {rename}",
                 f"丹炉从文件夹名（N_名称）读取重复次数，而这个文件夹名里没有：{rename_zh}")
    elif parsed[0] != repeats:
        out.skip(f"{prefix}num_repeats", repeats, f"Danlu reads the repeat count from the folder name, which "
                                                  f"says {parsed[0]}: {rename}",
                 f"丹炉从文件夹名读取重复次数，而文件夹名写的是 {parsed[0]}：{rename_zh}")
    if parsed is not None and tokens is not None and parsed[1] != tokens:
        out.skip(f"{prefix}class_tokens", tokens, f"Danlu reads the class tokens from the folder name, which "
                                                  f"says '{parsed[1]}': {rename}",
                 f"丹炉从文件夹名读取类别词，而文件夹名写的是 '{parsed[1]}'：{rename_zh}")

