"""Importing other tools' configs (trainer/presets/importers.py): one representative file per format in
tests/data/imports/, written from each tool's documentation and shipped files, plus small cases per rule."""

import json
import sys
from pathlib import Path

import pytest

from trainer.common.errors import ConfigError
from trainer.config import TrainConfig
from trainer.presets.import_kohya_ss import GUI_ONLY_REASON, parse_arguments
from trainer.presets.importers import detect_format, import_file, read_foreign
from trainer.training.sampling import parse_prompt_line

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DATA = Path(__file__).parent / "data" / "imports"
FILES = {"kohya_ss_loha.json": "kohya_ss", "sd_scripts_config.toml": "sd_scripts",
         "sd_scripts_dataset.toml": "sd_scripts_dataset", "lora_scripts_config.toml": "lora_scripts",
         "lora_scripts_preset.toml": "lora_scripts"}


def foreign_keys(path: Path) -> set[str]:
    """Every field of the file as the importer names it: sections of a config TOML are ignored (as sd-scripts
    does), a preset's [metadata] is metadata.*, a dataset config's levels are dotted."""
    data = read_foreign(path)
    if "datasets" in data:
        keys = {f"general.{key}" for key in data.get("general", {})}
        for i, dataset in enumerate(data["datasets"]):
            keys |= {f"datasets.{i}.{key}" for key in dataset if key != "subsets"}
            for j, subset in enumerate(dataset.get("subsets", [])):
                keys |= {f"datasets.{i}.subsets.{j}.{key}" for key in subset}
        return keys
    if "metadata" in data and "data" in data:
        return {f"metadata.{key}" for key in data["metadata"]} | flat_keys(data["data"])
    return flat_keys(data)


def flat_keys(data: dict) -> set[str]:
    keys: set[str] = set()
    for key, value in data.items():
        keys |= flat_keys(value) if isinstance(value, dict) else {key}
    return keys


def unmapped(result) -> dict:
    return {item.key: item for item in result.unmapped}


def write(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(content) if name.endswith(".json") else content, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", FILES)
def test_format_is_detected(name):
    path = DATA / name
    assert detect_format(path, read_foreign(path)) == FILES[name]
    assert import_file(path).format == FILES[name]


@pytest.mark.parametrize("name", FILES)
def test_every_field_is_mapped_or_listed_and_the_settings_validate(name):
    path = DATA / name
    result = import_file(path)
    listed = set(unmapped(result))
    taken = set(result.mapped) | listed
    missing = {key for key in foreign_keys(path) if key not in taken and not any(
        other.startswith(f"{key}.") for other in taken)}
    assert not missing, f"dropped silently: {sorted(missing)}"
    assert not set(result.mapped) & listed, "a field is both mapped and listed"
    assert all(item.reason for item in result.unmapped)
    TrainConfig(**result.settings)


def test_kohya_ss_fields_are_converted():
    result = import_file(DATA / "kohya_ss_loha.json")
    settings, skipped = result.settings, unmapped(result)
    assert settings["network_type"] == "loha"  # LoRA_type LyCORIS/LoHa
    assert (settings["conv_dim"], settings["conv_alpha"]) == (8, 4)
    assert settings["lr_warmup_steps"] == pytest.approx(0.1)  # lr_warmup: 10 percent
    assert settings["resolution"] == "768,768"  # max_resolution
    assert settings["optimizer_args"] == ["weight_decay=0.05", "betas=0.9,0.99"]  # one string in kohya_ss
    assert settings["optimizer_type"] == "AdamW8bit"  # optimizer
    assert settings["max_train_epochs"] == 12  # epoch, with max_train_epochs and max_train_steps empty
    assert "max_train_steps" not in settings
    assert settings["clip_skip"] == 2 and settings["keep_tokens"] == 1 and settings["max_token_length"] == 150
    first = "alice, 1girl, smiling, upper body --n lowres, bad hands --w 512 --h 768 --d 42"
    assert settings["sample_prompts"] == [first, "alice, full body, park --w 768 --h 512"]
    assert settings["sdpa"] is True and "xformers" not in settings  # not installed: sdpa, and the field listed
    assert "xformers" in {item.key for item in result.unmapped}
    # noise_offset_type Multires: the Multires fields are passed, noise_offset is not
    assert (settings["multires_noise_iterations"], settings["multires_noise_discount"]) == (6, 0.3)
    assert "noise_offset" not in settings
    assert settings["min_snr_gamma"] == 5.0  # from additional_parameters; min_snr_gamma 0 there means unset
    # empty strings and 0 are Danlu's empty
    for key in ("seed", "vae", "network_weights", "save_every_n_steps", "vae_batch_size", "min_timestep",
                "network_dropout", "reg_data_dir", "v2"):
        assert key not in settings
    assert (skipped["model_list"].reason, skipped["model_list"].reason_zh) == GUI_ONLY_REASON
    assert skipped["LyCORIS_preset"].reason == GUI_ONLY_REASON[0]
    assert "random seed" in skipped["seed"].reason
    assert "additional_parameters.lowram" in skipped
    # values Danlu refuses are listed with the validation message, not imported
    assert "greater than or equal to 8" in skipped["bucket_reso_steps"].reason
    assert "not available for loha" in skipped["scale_weight_norms"].reason
    # LyCORIS switches: use_cp is LoKr's, so for LoHa kohya_ss does not pass it; off switches change nothing
    assert {"use_cp", "use_tucker", "train_on_input"} <= set(result.mapped)


RULES = [
    ({"epoch": 5, "max_train_epochs": "", "max_train_steps": "900"}, {"max_train_epochs": None,
                                                                      "max_train_steps": 900}),
    ({"epoch": 5, "max_train_epochs": "7", "max_train_steps": "900"}, {"max_train_epochs": 7}),
    ({"unet_lr": 1e-4, "text_encoder_lr": 0}, {"network_train_unet_only": True, "unet_lr": 1e-4}),
    ({"unet_lr": "", "text_encoder_lr": 5e-5}, {"network_train_text_encoder_only": True,
                                                 "text_encoder_lr": 5e-5}),
    ({"LoRA_type": "Standard", "conv_dim": 8, "conv_alpha": 1}, {"network_type": "lora"}),
    ({"LoRA_type": "Kohya LoCon", "conv_dim": 8, "conv_alpha": 1}, {"network_type": "locon", "conv_dim": 8}),
    ({"LoRA_type": "LyCORIS/LoKr", "factor": 8}, {"network_type": "lokr", "factor": 8}),
    ({"xformers": "sdpa"}, {"sdpa": True}),
    ({"xformers": "none"}, {"sdpa": False}),
    ({"sdxl": True, "v2": False, "clip_skip": "2", "sdxl_cache_text_encoder_outputs": True},
     {"model_family": "sdxl", "cache_text_encoder_outputs": True, "clip_skip": None}),
    ({"noise_offset_type": "Original", "noise_offset": 0.1, "multires_noise_iterations": 6}, {"noise_offset": 0.1}),
    ({"lr_scheduler": "cosine_with_restarts", "lr_scheduler_num_cycles": "", "epoch": 4},
     {"lr_scheduler_num_cycles": 4}),
    ({"optimizer": "AdamW", "use_8bit_adam": True}, {"optimizer_type": "AdamW"}),
    ({"LoRA_type": "Standard", "use_8bit_adam": True}, {"optimizer_type": "AdamW8bit"}),
]


def test_xformers_becomes_sdpa_when_it_is_not_installed(tmp_path):
    result = import_file(write(tmp_path, "kohya.json", {"LoRA_type": "Standard", "xformers": True}))
    assert result.settings.get("sdpa") is True and "xformers" not in result.settings  # trains on the first try
    assert [item.key for item in result.unmapped] == ["xformers"] and "sdpa" in result.unmapped[0].reason


@pytest.mark.parametrize(("fields", "expected"), RULES)
def test_kohya_ss_rules(tmp_path, fields, expected):
    result = import_file(write(tmp_path, "kohya.json", {"LoRA_type": "Standard", **fields}))
    assert {key: result.settings.get(key) for key in expected} == expected
    assert set(fields) <= set(result.mapped)
    if "v2" in fields or "multires_noise_iterations" in fields:
        assert "v2" not in result.settings and "multires_noise_iterations" not in result.settings


@pytest.mark.parametrize("fields, key, words", [
    ({"LoRA_type": "LyCORIS/iA3"}, "LoRA_type", "network_type stays lora"),
    ({"lr_warmup": 100}, "lr_warmup", "whole run"),
    ({"LoRA_type": "LyCORIS/LoHa", "LyCORIS_preset": "attn-only"}, "LyCORIS_preset", "full preset only"),
    ({"LoRA_type": "LyCORIS/LoHa", "use_tucker": True}, "use_tucker", "LyCORIS option"),
    ({"weighted_captions": True}, "weighted_captions", "not supported"),
    ({"additional_parameters": "--network_args 'unbalanced"}, "additional_parameters", "cannot be read"),
    ({"frobnicate": 3}, "frobnicate", "no equivalent"),
])
def test_kohya_ss_fields_that_are_listed(tmp_path, fields, key, words):
    result = import_file(write(tmp_path, "kohya.json", {"LoRA_type": "Standard", **fields}))
    assert words in unmapped(result)[key].reason


def test_additional_parameters_are_read_as_arguments():
    assert parse_arguments('--a=1 --flag --b x "y z"') == {"a": "1", "flag": True, "b": ["x", "y z"]}


def test_sd_scripts_config_keys_map_as_they_are():
    result = import_file(DATA / "sd_scripts_config.toml")
    settings, skipped = result.settings, unmapped(result)
    assert settings["network_module"] == "lycoris.kohya"
    # entries Danlu trains stay; LyCORIS's off switches change nothing; the rest is listed by itself
    assert settings["network_args"] == ["conv_dim=8", "conv_alpha=4", "algo=locon"]
    assert "network_args.use_tucker" in result.mapped
    assert "network_args.train_norm" in skipped
    assert settings["optimizer_args"] == ["weight_decay=0.1", "betas=0.9,0.99"]
    assert settings["resolution"] == "512,640" and settings["max_train_epochs"] == 8
    assert settings["sample_prompts"] == "/home/me/data/alice_prompts.txt"
    assert "v2" not in settings  # v2 = false is sd-scripts' "not given"
    assert "preset import" in skipped["dataset_config"].reason
    assert "TensorBoard" in skipped["logging_dir"].reason  # config_io.NOT_NEEDED's reason
    assert {"lowram", "weighted_captions", "log_prefix"} <= set(skipped)
    assert {"mem_eff_attn", "use_8bit_adam", "no_half_vae"} <= set(result.mapped)  # off, or Danlu does so
    # network_alpha is left out: sd-scripts trains with alpha 1, Danlu's default is 32
    assert settings["network_alpha"] == 1.0
    assert result.metadata["sd_scripts_defaults"] == {"network_alpha": 1.0}
    assert TrainConfig(**settings).network_type == "locon"


def test_sd_scripts_defaults_fill_what_a_config_leaves_out(tmp_path):
    result = import_file(write(tmp_path, "bare.toml", 'pretrained_model_name_or_path = "m.safetensors"\n'))
    assert result.settings["max_train_steps"] == 1600 and result.settings["max_train_epochs"] is None
    assert (result.settings["lr_scheduler"], result.settings["learning_rate"]) == ("constant", 2e-6)
    assert result.settings["caption_extension"] == ".caption"
    assert result.metadata["sd_scripts_defaults"]["enable_bucket"] is False


def test_sd_scripts_flux_memory_options_map_as_they_are(tmp_path):
    text = ('pretrained_model_name_or_path = "flux1-dev.safetensors"\nmixed_precision = "bf16"\nfp8_base_unet = true\n'
            'gradient_checkpointing = true\ncpu_offload_checkpointing = true\nsplit_mode = true\n')
    result = import_file(write(tmp_path, "flux.toml", text))
    assert (result.settings["fp8_base_unet"], result.settings["cpu_offload_checkpointing"]) == (True, True)
    assert set(unmapped(result)) == {"split_mode"}
    swap = import_file(write(tmp_path, "swap.toml", 'blocks_to_swap = 18\n'))
    assert swap.settings["blocks_to_swap"] == 18


@pytest.mark.parametrize("network", [
    'network_module = "networks.oft"\nnetwork_args = ["conv_dim=4"]',
    'network_module = "lycoris.kohya"\nnetwork_args = ["algo=ia3", "conv_dim=4"]',
])
def test_a_network_danlu_does_not_train_is_listed_with_its_args(tmp_path, network):
    result = import_file(write(tmp_path, "net.toml", network + "\nnetwork_dim = 8\n"))
    skipped = unmapped(result)
    assert "network_module" in skipped and "network_args" in skipped
    assert "network_args" not in result.settings and "network_module" not in result.settings
    assert TrainConfig(**result.settings).network_type == "lora"


def test_sd_scripts_dataset_maps_to_the_dataset_folders():
    result = import_file(DATA / "sd_scripts_dataset.toml")
    settings, skipped = result.settings, unmapped(result)
    assert settings["train_data_dir"] == "/data/alice/train"  # 10_alice and 4_alice casual: named N_name
    assert settings["reg_data_dir"] == "/data/alice/reg"
    assert (settings["resolution"], settings["train_batch_size"]) == ("768,512", 2)
    assert (settings["shuffle_caption"], settings["keep_tokens"], settings["caption_extension"]) == (True, 1, ".txt")
    # options set for one subset only cannot be one Danlu key
    assert "differs between subsets" in skipped["datasets.0.subsets.0.flip_aug"].reason
    assert "flip_aug" not in settings and "caption_dropout_rate" not in settings
    assert "not supported" in skipped["datasets.0.subsets.1.face_crop_aug_range"].reason
    assert "datasets.0.subsets.2.is_reg" in result.mapped


def dataset_toml(*subsets: str) -> str:
    return "[[datasets]]\nresolution = 512\n" + "".join(f"  [[datasets.subsets]]\n{s}\n" for s in subsets)


@pytest.mark.parametrize("subsets, key, words", [
    (['image_dir = "/d/train/5_alice"\nnum_repeats = 10'], "datasets.0.subsets.0.num_repeats",
     "rename /d/train/5_alice to /d/train/10_alice"),
    (['image_dir = "/d/train/alice"\nnum_repeats = 3\nclass_tokens = "alice"'], "datasets.0.subsets.0.image_dir",
     "rename /d/train/alice to /d/train/3_alice"),
    (['image_dir = "/d/train/2_bob"\nnum_repeats = 2\nclass_tokens = "alice"'], "datasets.0.subsets.0.class_tokens",
     "rename /d/train/2_bob to /d/train/2_alice"),
    (['image_dir = "/a/2_x"\nnum_repeats = 2', 'image_dir = "/b/2_y"\nnum_repeats = 2'],
     "datasets.0.subsets.1.image_dir", "different folders"),
    (['image_dir = "/d/2_x"\nnum_repeats = 2', 'image_dir = "/d/1_reg"\nis_reg = true'],
     "datasets.0.subsets.1.image_dir", "own parent"),
])
def test_dataset_folders_danlu_cannot_read_as_they_are_are_listed(tmp_path, subsets, key, words):
    result = import_file(write(tmp_path, "dataset.toml", dataset_toml(*subsets)))
    assert words in unmapped(result)[key].reason
    assert "reg_data_dir" not in result.settings


def test_lora_scripts_config_flattens_its_sections():
    result = import_file(DATA / "lora_scripts_config.toml")
    settings = result.settings
    assert settings["lr_scheduler_num_cycles"] == 2  # lr_restart_cycles, lora-scripts' older name
    assert (settings["cache_latents"], settings["shuffle_caption"]) == (True, True)  # from [others]
    assert settings["network_module"] == "networks.lora" and "network_args" not in settings
    assert "reg_data_dir" not in settings  # "" = none
    assert "learning_rate" not in settings  # unet_lr and text_encoder_lr are both given
    assert "TensorBoard" in unmapped(result)["logging_dir"].reason


def test_lora_scripts_preset_maps_its_form_fields_and_keeps_its_metadata():
    result = import_file(DATA / "lora_scripts_preset.toml")
    settings, skipped = result.settings, unmapped(result)
    expected = tomllib.loads((DATA / "lora_scripts_preset.toml").read_text(encoding="utf-8"))["metadata"]
    assert result.metadata == expected
    assert result.metadata["name"] == "LoKr 角色 768"
    assert settings["network_args"] == ["algo=lokr", "factor=8"]  # lycoris_algo, lokr_factor
    assert "a network argument Danlu does not have" in skipped["train_norm"].reason
    assert settings["optimizer_args"] == ["decouple=True", "weight_decay=0.01", "d_coef=2.0"]
    prompt = "masterpiece, best quality, aki, 1girl, solo --n lowres, bad anatomy --w 512 --h 768 --l 7 --s 24 --d 1337"
    assert settings["sample_prompts"] == [prompt]
    preview = parse_prompt_line(settings["sample_prompts"][0], (512, 512))  # Danlu reads the line it built
    assert (preview.width, preview.height, preview.steps, preview.scale, preview.seed) == (512, 768, 24, 7.0, 1337)
    assert TrainConfig(**settings).gpu_ids == "0"  # lora-scripts writes a list of GPU numbers
    assert "sd_scripts_defaults" not in result.metadata  # a preset holds only what differs from lora-scripts'
    assert "lr_scheduler" not in settings
    config = TrainConfig(**settings)
    assert (config.network_type, config.factor) == ("lokr", 8)


def test_lora_scripts_switched_off_form_fields_are_not_taken(tmp_path):
    text = ('model_train_type = "sdxl-lora"\nclip_skip = 2\nenable_preview = false\npositive_prompts = "aki"\n'
            'enable_base_weight = false\nbase_weights = "x.safetensors"\nui_custom_params = "min_snr_gamma = 5"\n')
    result = import_file(write(tmp_path, "form.toml", text))
    assert result.settings["model_family"] == "sdxl" and "clip_skip" not in result.settings  # SDXL ignores it
    assert "sample_prompts" not in result.settings
    assert "enable_preview is off" in unmapped(result)["positive_prompts"].reason
    assert "base_weights" in result.mapped and "base_weights" not in unmapped(result)
    assert result.settings["min_snr_gamma"] == 5  # ui_custom_params override the form


@pytest.mark.parametrize("name, content, words", [
    ("missing.toml", None, "file not found"),
    ("broken.toml", "network_dim = = 4", "not valid TOML"),
    ("broken.json", "{\"LoRA_type\": ", "not valid JSON"),
    ("list.json", "[1, 2]", "mapping"),
    ("danlu.json", "{\"network_dim\": 4}", "not a kohya_ss GUI config"),
    ("config.yaml", "network_dim: 4", "needs no import"),
])
def test_a_file_that_cannot_be_imported_is_named(tmp_path, name, content, words):
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        import_file(path)
    assert name in str(raised.value) and words in str(raised.value)


def test_a_binary_file_is_named(tmp_path):
    path = tmp_path / "model.toml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x01binary")  # no BOM: \xff\xfe would start UTF-16 text
    with pytest.raises(ConfigError, match="model.toml' is not UTF-8 or GBK text"):
        import_file(path)


def test_a_refused_network_arg_goes_alone(tmp_path):
    text = 'network_module = "lycoris.kohya"\nnetwork_args = ["algo=loha", "conv_dim=2000", "factor=4"]\n'
    result = import_file(write(tmp_path, "net.toml", text))
    skipped = unmapped(result)
    assert result.settings["network_args"] == ["algo=loha"]  # still a LoHa
    assert "ranks go up to 1024" in skipped["network_args.conv_dim"].reason
    assert "factor is for network_type lokr" in skipped["network_args.factor"].reason
    assert TrainConfig(**result.settings).network_type == "loha"
