"""lora-scripts (Akegarasu/lora-scripts, SD-Trainer) TOML: sd-scripts' keys in sections, plus the fields of its
web form that its frontend turns into sd-scripts arguments (lycoris_algo, lokr_factor, enable_preview with
positive_prompts, ...). Its preset files (config/presets/*.toml) hold [metadata] (name, version, author,
train_type, description) and [data] with the form's fields: only those that differ from its defaults."""

from __future__ import annotations

import sys
from typing import Any

from trainer.presets.collector import Collector, is_off, number
from trainer.presets.import_sd_scripts import (
    as_entries,
    fill_sd_scripts_defaults,
    flatten_sections,
    map_network,
    map_sd_scripts_keys,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MODEL_TRAIN_TYPES = {"sd-lora": None, "sdxl-lora": "sdxl", "flux-lora": "flux"}  # -> Danlu's model_family
# Form field -> the network_args entry it becomes, and the network_module (or algo) whose form shows it.
NETWORK_FORM = {"lycoris_algo": ("algo", "lycoris.kohya"), "dropout": ("dropout", "lycoris.kohya"),
                "train_norm": ("train_norm", "lycoris.kohya"), "lokr_factor": ("factor", "lokr"),
                "dylora_unit": ("unit", "networks.dylora")}
PRODIGY_FORM = {"prodigy_d0": "d0", "prodigy_d_coef": "d_coef"}  # -> optimizer_args with optimizer_type Prodigy
# The preview form's fields and the values lora-scripts uses for those left out.
PREVIEW_DEFAULTS = {"negative_prompts": "", "sample_width": 512, "sample_height": 512, "sample_cfg": 7,
                    "sample_steps": 24, "sample_seed": 2333}
PREVIEW_FIELDS = ("positive_prompts", *PREVIEW_DEFAULTS, "randomly_choice_prompt", "prompt_file")
PREVIEW_CHANGED = ("lora-scripts' preview form, written as the one prompt line it passes to sd-scripts (--n negative, "
                   "--w/--h size, --l CFG, --s steps, --d seed; lora-scripts' values for the fields left out)")
PREVIEW_CHANGED_ZH = ("秋叶训练器的预览表单，写成它传给 sd-scripts 的那一行提示词"
"（--n 反向提示词、--w/--h 尺寸、--l CFG、"
                      "--s 步数、--d 种子；没填的字段用秋叶训练器的默认值）")
# A form switch and the fields it shows: with the switch off they are not sent to sd-scripts.
SWITCHED = {"enable_base_weight": ("base_weights", "base_weights_multiplier"),
            "enable_block_weights": ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_lr_zero_threshold")}


def import_lora_scripts(data: dict[str, Any]) -> Collector:
    preset = isinstance(data.get("metadata"), dict) and isinstance(data.get("data"), dict)
    flat = flatten_sections(data["data"] if preset else data)
    extra = {key: value for key, value in data.items() if key not in ("metadata", "data")} if preset else {}
    metadata = data["metadata"] if preset else {}
    out = Collector({**flat, **extra, **{f"metadata.{key}": value for key, value in metadata.items()}})
    out.metadata.update(metadata)
    for key in metadata:
        out.keep(f"metadata.{key}")
    for key, value in extra.items():
        out.skip(key, value, "a lora-scripts preset holds [metadata] and [data] only",
                 "秋叶训练器的预设只有 [metadata] 和 [data] 两部分")
    for step in (_network, _optimizer, _model_type, _preview, _switches, _renamed):
        step(out, flat)  # each takes the form fields it understands out of flat
    custom = flat.pop("ui_custom_params", None)
    map_sd_scripts_keys(out, flat)
    if custom is not None:
        _custom_params(out, custom)
    if not preset:
        fill_sd_scripts_defaults(out, out.raw)
    return out


def _network(out: Collector, flat: dict[str, Any]) -> None:
    module = flat.pop("network_module", None)
    algo = str(flat.get("lycoris_algo", "")).lower()
    args = [(entry, "network_args") for entry in as_entries(flat.pop("network_args", None))]
    for key, (arg, shown_with) in NETWORK_FORM.items():
        if key not in flat:
            continue
        value = flat.pop(key)
        if shown_with not in (module, algo) or is_off(value):
            out.keep(key)  # off, or a field of another network's form, which lora-scripts does not send
        else:
            args.append((f"{arg}={value}", key))
    args += [(str(entry), "network_args_custom") for entry in flat.pop("network_args_custom", None) or []]
    if module is not None or args:
        map_network(out, module, args)
    for source in ("network_args", "network_args_custom"):
        if source in out.raw:
            out.keep(source)  # an empty list too


def _optimizer(out: Collector, flat: dict[str, Any]) -> None:
    entries = [(entry, "optimizer_args") for entry in as_entries(flat.pop("optimizer_args", None))]
    entries += [(str(entry), "optimizer_args_custom") for entry in flat.pop("optimizer_args_custom", None) or []]
    prodigy = str(flat.get("optimizer_type", "")).lower() == "prodigy"
    for key, arg in PRODIGY_FORM.items():
        if key not in flat:
            continue
        value = flat.pop(key)
        if prodigy and number(value) is not None:
            entries.append((f"{arg}={value}", key))
        else:
            out.keep(key)  # empty, or the Prodigy form is not shown for this optimizer
    if entries:
        out.set("optimizer_args", [entry for entry, _ in entries], *dict.fromkeys(source for _, source in entries))
    for source in ("optimizer_args", "optimizer_args_custom"):
        if source in out.raw:
            out.keep(source)


def _model_type(out: Collector, flat: dict[str, Any]) -> None:
    if "model_train_type" not in flat:
        return
    kind = flat.pop("model_train_type")
    if kind not in MODEL_TRAIN_TYPES:
        out.skip("model_train_type", kind, f"Danlu trains {', '.join(MODEL_TRAIN_TYPES)} (LoRAs for SD1/SD2, "
                                           "SDXL and Flux.1), not this",
                 f"丹炉能训练 {', '.join(MODEL_TRAIN_TYPES)}（SD1/SD2、SDXL 和 Flux.1 的 LoRA），不包括这个")
    elif MODEL_TRAIN_TYPES[kind]:
        out.set("model_family", MODEL_TRAIN_TYPES[kind], "model_train_type")
        if "clip_skip" in flat:
            flat.pop("clip_skip")
            out.keep("clip_skip")  # sd-scripts' SDXL and Flux.1 scripts ignore it; Danlu would refuse it
    else:
        out.keep("model_train_type")  # SD1 or SD2: Danlu tells them apart from the model


def _preview(out: Collector, flat: dict[str, Any]) -> None:
    """lora-scripts writes the preview form into one prompt line with sd-scripts' --n/--w/--h/--l/--s/--d."""
    enabled = flat.pop("enable_preview", True)
    form = {key: flat.pop(key) for key in PREVIEW_FIELDS if key in flat}
    if "enable_preview" in out.raw:
        out.keep("enable_preview")
    if not enabled:
        for key, value in form.items():
            out.skip(key, value, "enable_preview is off: lora-scripts makes no previews with it",
                     "enable_preview 关着：秋叶训练器这样设置时不出预览图")
        return
    if str(form.get("prompt_file", "")).strip():
        out.set("sample_prompts", str(form["prompt_file"]).strip(), "prompt_file")
    elif str(form.get("positive_prompts", "")).strip():
        values = {**PREVIEW_DEFAULTS, **form}
        negative = f" --n {values['negative_prompts']}" if str(values["negative_prompts"]).strip() else ""
        prompt = (f"{' '.join(str(values['positive_prompts']).split())}{negative} --w {values['sample_width']} "
                  f"--h {values['sample_height']} --l {values['sample_cfg']} --s {values['sample_steps']} "
                  f"--d {values['sample_seed']}")
        out.set("sample_prompts", [prompt], *(key for key in form if key != "randomly_choice_prompt"),
                why=PREVIEW_CHANGED, why_zh=PREVIEW_CHANGED_ZH)
    if form.get("randomly_choice_prompt"):
        out.skip("randomly_choice_prompt", True, "Danlu does not pick a random caption as the preview prompt; "
                                                 "it uses positive_prompts",
                 "丹炉不会随机挑一条标注当预览提示词；它用 positive_prompts")
    for key in form:
        out.keep(key)  # left empty, or part of the prompt line above


def _switches(out: Collector, flat: dict[str, Any]) -> None:
    for switch, fields in SWITCHED.items():
        if switch not in flat:
            continue
        out.keep(switch)
        if not flat.pop(switch):
            for key in fields:
                if key in flat:
                    flat.pop(key)
                    out.keep(key)  # the switch is off: lora-scripts does not send it


def _renamed(out: Collector, flat: dict[str, Any]) -> None:
    """lr_restart_cycles: lora-scripts' older name for lr_scheduler_num_cycles."""
    if "lr_restart_cycles" in flat:
        value = flat.pop("lr_restart_cycles")
        if "lr_scheduler_num_cycles" in flat:
            out.keep("lr_restart_cycles")  # the newer name wins
        else:
            out.set("lr_scheduler_num_cycles", value, "lr_restart_cycles")


def _custom_params(out: Collector, text: Any) -> None:
    """ui_custom_params: TOML typed into the form, which overrides every other field."""
    try:
        custom = flatten_sections(tomllib.loads(str(text)))
    except tomllib.TOMLDecodeError as exc:
        out.skip("ui_custom_params", text, f"not valid TOML: {exc}", f"不是有效的 TOML：{exc}")
        return
    out.keep("ui_custom_params")
    map_sd_scripts_keys(out, custom, prefix="ui_custom_params.")
