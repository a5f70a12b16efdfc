"""kohya_ss GUI (bmaltais/kohya_ss) LoRA-tab JSON: its own field names, and the values its train_model() turns into
sd-scripts arguments: LoRA_type, max_resolution, epoch, lr_warmup in percent, optimizer_args as one string, and
empty strings or 0 for "unset"."""

from __future__ import annotations

import shlex
from typing import Any

from trainer.config import TrainConfig
from trainer.config.schema.flux import FluxFields
from trainer.presets.collector import Collector, coerce, number
from trainer.presets.import_sd_scripts import (
    ALWAYS_LIKE_DANLU,
    FULL_PRESET_ONLY,
    NO_EQUIVALENT,
    SD_SCRIPTS_DEFAULTS,
    as_entries,
    map_sd_scripts_keys,
    skip_unless_off,
)

GUI_ONLY_REASON = ("kohya_ss GUI setting, no effect on training", "kohya_ss 图形界面自己的设置，对训练没有影响")
GUI_ONLY = ("model_list", "training_preset", "save_as", "save_as_bool", "file_path", "headless", "print_only")
# accelerate launch options Danlu does not take (num_processes, num_machines, gpu_ids, main_process_port are its
# own keys and import as they are).
LAUNCH = ("num_cpu_threads_per_process", "multi_gpu", "dynamo_backend", "dynamo_mode", "dynamo_use_fullgraph",
          "dynamo_use_dynamic", "extra_accelerate_launch_args")
LAUNCH_REASON = ("an accelerate launch option: Danlu launches the processes itself (num_processes, gpu_ids; "
                 "torch_compile for dynamo)", "accelerate 的启动选项：丹炉自己启动进程（num_processes、gpu_ids；"
                 "dynamo 对应 torch_compile）")
_IGNORED_BY_KOHYA = ("kohya_ss ignores it too ('not yet supported')", "kohya_ss 自己也忽略它（“尚未支持”）")
KOHYA_NO_EQUIVALENT = {
    **NO_EQUIVALENT,
    "use_wandb": NO_EQUIVALENT["wandb_api_key"],
    "stop_text_encoder_training_pct": _IGNORED_BY_KOHYA,
    "stop_text_encoder_training": _IGNORED_BY_KOHYA,
}
# LoRA_type -> Danlu's network_type.
LORA_TYPES = {"Standard": "lora", "Kohya LoCon": "locon", "LoCon": "locon", "LyCORIS/LoCon": "locon",
              "LyCORIS/LoHa": "loha", "LyCORIS/LoKr": "lokr", "Kohya DyLoRA": "dylora", "Flux1": "lora"}
# Fields kohya_ss passes only for some LoRA types (train_model's network_args); for the others they do nothing.
_LOCON_SWITCHES = ("bypass_mode", "dora_wd", "use_tucker", "use_scalar", "rank_dropout_scale", "train_norm")
TYPE_FIELDS = {
    "conv_dim": ("Kohya LoCon", "LoCon", "LyCORIS/LoCon", "LyCORIS/LoHa", "LyCORIS/LoKr", "Kohya DyLoRA"),
    "factor": ("LyCORIS/LoKr",), "unit": ("Kohya DyLoRA",),
    **{switch: ("LoCon", "LyCORIS/LoCon", "LyCORIS/LoHa", "LyCORIS/LoKr") for switch in _LOCON_SWITCHES},
    "use_cp": ("LyCORIS/LoKr",), "decompose_both": ("LyCORIS/LoKr",),
    "constrain": (), "rescaled": (), "train_on_input": (),  # OFT / iA3 switches: Danlu trains neither
}
TYPE_FIELDS["conv_alpha"] = TYPE_FIELDS["conv_dim"]
LYCORIS_ONLY = ("a LyCORIS option Danlu does not have", "丹炉没有这个 LyCORIS 选项")
LYCORIS_SWITCHES = (*_LOCON_SWITCHES, "use_cp", "decompose_both", "constrain", "rescaled", "train_on_input")
FLUX_ONLY = (*FluxFields.model_fields, "ae", "clip_l", "t5xxl")  # kohya_ss passes them only with flux1_checkbox
NOISE_FIELDS = {"Original": ("noise_offset", "adaptive_noise_scale", "noise_offset_random_strength"),
                "Multires": ("multires_noise_iterations", "multires_noise_discount")}
DROPPED_ZERO = ("kohya_ss leaves 0 out of sd-scripts' arguments, so sd-scripts' default applies",
                "kohya_ss 不把 0 传给 sd-scripts，所以用的是 sd-scripts 的默认值")
KEEPS_ZERO = ("max_data_loader_n_workers",)  # train_model passes it after dropping the empty values
RENAMES = {"max_resolution": "resolution", "optimizer": "optimizer_type", "lora_network_weights": "network_weights"}


def import_kohya_ss(data: dict[str, Any]) -> Collector:
    out = Collector(dict(data))
    for group in (_network, _family, _length, _learning_rates, _warmup, _attention, _noise, _extras):
        group(out, data)
    done = {*out.mapped, *(item.key for item in out.unmapped)}
    for key, value in data.items():
        if key not in done:
            _field(out, key, value)
    return out


def _field(out: Collector, key: str, value: Any) -> None:
    if key in GUI_ONLY:
        out.skip(key, value, *GUI_ONLY_REASON)
    elif key in LAUNCH:
        out.skip(key, value, *LAUNCH_REASON)
    elif key in TrainConfig.model_fields or key in RENAMES:
        set_kohya(out, RENAMES.get(key, key), value, key)
    elif key in ALWAYS_LIKE_DANLU:
        out.keep(key)
    elif key in KOHYA_NO_EQUIVALENT:
        skip_unless_off(out, key, value, KOHYA_NO_EQUIVALENT[key])
    else:
        out.skip(key, value, "a kohya_ss field Danlu has no equivalent for", "丹炉没有与这个 kohya_ss 字段对应的设置")


def set_kohya(out: Collector, key: str, value: Any, source: str) -> None:
    """A Danlu key from a kohya_ss field. kohya_ss's train_model leaves every "", None, False and 0 out of
    sd-scripts' arguments (`value not in ["", False, None]`, and 0 == False), so the key has sd-scripts' default:
    0 for max_grad_norm trains with clipping at 1.0, as kohya_ss does."""
    danlu = TrainConfig.model_fields[key].default
    if key in KEEPS_ZERO or not (value in (None, "") or value is False or number(value) == 0):
        out.set(key, coerce(key, value), source)
    elif value is False and danlu is True:
        out.set(key, False, source)  # a store_true flag left off: sd-scripts' default
    elif key in SD_SCRIPTS_DEFAULTS:
        out.set(key, SD_SCRIPTS_DEFAULTS[key], source, why=DROPPED_ZERO[0], why_zh=DROPPED_ZERO[1])
    else:
        out.keep(source)  # Danlu's default is sd-scripts'
        if number(value) == 0 and value is not False and number(danlu) not in (None, 0):  # 0 == False: not `in`
            out.changed_to_default(source, key, danlu, *DROPPED_ZERO)


def _network(out: Collector, data: dict[str, Any]) -> None:
    lora_type = data.get("LoRA_type", "Standard")
    kind = LORA_TYPES.get(lora_type)
    if "LoRA_type" in data and kind is None:
        out.skip("LoRA_type", lora_type, f"Danlu trains {', '.join(LORA_TYPES)}; network_type stays lora",
                 f"丹炉能训练 {', '.join(LORA_TYPES)}；network_type 保持 lora")
    elif "LoRA_type" in data:
        out.set("network_type", kind, "LoRA_type")
        if lora_type == "Flux1":
            out.set("network_module", "networks.lora_flux", "LoRA_type")
    if "LyCORIS_preset" in data:
        preset = data["LyCORIS_preset"]
        lycoris = lora_type == "LoCon" or lora_type.startswith("LyCORIS/")
        out.skip("LyCORIS_preset", preset, *(GUI_ONLY_REASON if preset == "full" or not lycoris else FULL_PRESET_ONLY))
    for key, types in TYPE_FIELDS.items():
        if key not in data:
            continue
        if lora_type not in types:
            out.keep(key)  # kohya_ss does not pass it for this LoRA type
        elif key in LYCORIS_SWITCHES:
            skip_unless_off(out, key, data[key], LYCORIS_ONLY)
        else:
            set_kohya(out, key, data[key], key)


def _family(out: Collector, data: dict[str, Any]) -> None:
    flux = bool(data.get("flux1_checkbox")) or data.get("LoRA_type") == "Flux1"
    sdxl = bool(data.get("sdxl"))
    if sdxl or flux:
        out.set("model_family", "flux" if flux else "sdxl", *[k for k in ("sdxl", "flux1_checkbox") if data.get(k)])
    caches = {"sdxl_cache_text_encoder_outputs": ("cache_text_encoder_outputs", sdxl),
              "flux1_cache_text_encoder_outputs": ("cache_text_encoder_outputs", flux),
              "flux1_cache_text_encoder_outputs_to_disk": ("cache_text_encoder_outputs_to_disk", flux)}
    for key, (danlu, applies) in caches.items():
        if applies and data.get(key):
            out.set(danlu, True, key)
    ignored = ("clip_skip",) if sdxl or flux else ()  # their scripts ignore it; Danlu would refuse it
    for key in ("sdxl", "flux1_checkbox", *caches, *ignored, *(FLUX_ONLY if not flux else ())):
        if key in data:
            out.keep(key)  # off, or (a Flux.1 field without Flux.1) not passed by kohya_ss


def _length(out: Collector, data: dict[str, Any]) -> None:
    """sd-scripts takes max_train_epochs over max_train_steps; kohya_ss turns `epoch` into the steps when
    max_train_steps is 0, which is epoch many epochs."""
    epochs, steps, epoch = (number(data.get(key)) for key in ("max_train_epochs", "max_train_steps", "epoch"))
    if epochs:
        out.set("max_train_epochs", int(epochs), "max_train_epochs")
    elif steps:
        out.set("max_train_epochs", None, "max_train_steps")
        out.set("max_train_steps", int(steps), "max_train_steps")
    elif epoch:
        out.set("max_train_epochs", int(epoch), "epoch", why="kohya_ss passes max_train_steps = ceil(images × "
                "repeats / batch / accumulation × epoch), whole epochs when each bucket fills its last batch and a "
                "few steps fewer otherwise; Danlu trains the whole epochs",
                why_zh="kohya_ss 传给 sd-scripts 的是 max_train_steps = ceil(图片数 × 重复次数"
                " / 批次 / 梯度累积 × 轮数)，"
                "每个分桶最后一批都装满时正好是整轮，否则少几步；丹炉训练完整的轮数")
    for key in ("max_train_epochs", "max_train_steps", "epoch"):
        if key in data:
            out.keep(key)  # empty, or outweighed by the one above


def _learning_rates(out: Collector, data: dict[str, Any]) -> None:
    """A learning rate of 0 for one part means: train only the other (kohya_ss's train_model)."""
    unet, text = (number(data.get(key)) or 0 for key in ("unet_lr", "text_encoder_lr"))
    if unet and not text and "text_encoder_lr" in data:
        out.set("network_train_unet_only", True, "text_encoder_lr")
    if text and not unet and "unet_lr" in data:
        out.set("network_train_text_encoder_only", True, "unet_lr")
    for key in ("unet_lr", "text_encoder_lr"):
        if key in data:
            set_kohya(out, key, data[key], key)


def _warmup(out: Collector, data: dict[str, Any]) -> None:
    """lr_warmup is a percentage of the total steps; Danlu's lr_warmup_steps below 1 is that fraction."""
    percent = number(data.get("lr_warmup")) or 0
    if percent >= 100:
        out.skip("lr_warmup", data["lr_warmup"], "a warm-up over the whole run cannot be written as a fraction "
                                                 "below 1; set lr_warmup_steps to the number of steps",
                 "贯穿整个训练的预热无法写成小于 1 的比例；请把 lr_warmup_steps 设为具体步数")
    elif percent:
        out.set("lr_warmup_steps", percent / 100, "lr_warmup", why="kohya_ss gives the warm-up in percent of the "
                "steps; Danlu's lr_warmup_steps below 1 is that fraction",
                why_zh="kohya_ss 的预热按总步数的百分比给出；丹炉的 lr_warmup_steps 小于 1 时就是这个比例")
    elif "lr_warmup" in data:
        out.keep("lr_warmup")
    cycles = data.get("lr_scheduler_num_cycles")
    epoch = number(data.get("epoch"))
    if cycles == "" and epoch and data.get("lr_scheduler") == "cosine_with_restarts":
        out.set("lr_scheduler_num_cycles", int(epoch), "lr_scheduler_num_cycles",
                why="kohya_ss passes epoch for an empty lr_scheduler_num_cycles",
                why_zh="lr_scheduler_num_cycles 为空时，kohya_ss 传的是轮数（epoch）")
    elif "lr_scheduler_num_cycles" in data:
        set_kohya(out, "lr_scheduler_num_cycles", cycles, "lr_scheduler_num_cycles")


def _attention(out: Collector, data: dict[str, Any]) -> None:
    """xformers: a checkbox in older kohya_ss, later "xformers" / "sdpa" / "none"."""
    if "xformers" not in data:
        return
    choice = {True: "xformers", False: "none"}.get(data["xformers"], data["xformers"])
    if choice not in ("xformers", "sdpa", "none"):
        out.skip("xformers", data["xformers"], "expected xformers, sdpa or none", "应为 xformers、sdpa 或 none")
        return
    if choice == "xformers":
        out.set("xformers", True, "xformers")
    else:  # "none" is the plain attention, as sd-scripts without either flag
        out.set("sdpa", choice == "sdpa", "xformers")


def _noise(out: Collector, data: dict[str, Any]) -> None:
    """kohya_ss passes the noise-offset fields of the chosen noise_offset_type only."""
    chosen = data.get("noise_offset_type", "Original")
    if "noise_offset_type" in data:
        out.keep("noise_offset_type")
    for kind, keys in NOISE_FIELDS.items():
        for key in keys:
            if key in data and kind != chosen:
                out.keep(key)
    if chosen == "Multires" and not number(data.get("multires_noise_iterations")) and \
            "multires_noise_discount" in data:
        out.keep("multires_noise_discount")  # no iterations: the discount has nothing to discount


def _extras(out: Collector, data: dict[str, Any]) -> None:
    """Fields whose value needs converting: the seed, the argument strings and the sample prompts."""
    if "seed" in data:
        if number(data["seed"]):
            out.set("seed", int(number(data["seed"])), "seed")
        else:
            out.skip("seed", data["seed"], "empty means a new random seed each run in kohya_ss; Danlu always "
                                           "seeds (default 1337), so runs repeat",
                     "在 kohya_ss 里留空表示每次训练用新的随机种子；丹炉总是固定种子（默认 1337），训练可以复现")
    for key in ("optimizer_args", "lr_scheduler_args"):
        if key in data:
            out.set(key, as_entries(data[key]), key)
    if data.get("use_8bit_adam") and not data.get("optimizer"):
        out.set("optimizer_type", "AdamW8bit", "use_8bit_adam")  # kohya_ss's older checkbox
    elif "use_8bit_adam" in data:
        out.keep("use_8bit_adam")
    if "sample_prompts" in data:
        lines = [line.strip() for line in str(data["sample_prompts"]).splitlines()]
        prompts = [line for line in lines if line and not line.startswith("#")]
        if prompts:
            out.set("sample_prompts", prompts, "sample_prompts")
        else:
            out.keep("sample_prompts")
    if "additional_parameters" in data:
        _additional(out, str(data["additional_parameters"] or ""))


def _additional(out: Collector, text: str) -> None:
    """Extra sd-scripts arguments typed into the GUI ("--min_snr_gamma=5 --network_args a=1 b=2"); they come
    last on kohya_ss's command line, so they win."""
    try:
        arguments = parse_arguments(text)
    except ValueError as exc:
        out.skip("additional_parameters", text, f"cannot be read as --name value arguments: {exc}",
                 f"无法按 --参数名 值 的形式读取：{exc}")
        return
    out.keep("additional_parameters")
    map_sd_scripts_keys(out, arguments, prefix="additional_parameters.")


def parse_arguments(text: str) -> dict[str, Any]:
    """'--a=1 --flag --b x y' -> {"a": "1", "flag": True, "b": ["x", "y"]}."""
    parsed: dict[str, Any] = {}
    name = None
    for token in shlex.split(text):
        if token.startswith("--"):
            name, equals, value = token[2:].partition("=")
            parsed[name] = value if equals else True
            name = None if equals else name
        elif name is None:
            raise ValueError(f"'{token}' is not after a --name")
        else:
            current = parsed[name]
            parsed[name] = token if current is True else [*([current] if isinstance(current, str) else current),
                                                          token]
    return parsed
