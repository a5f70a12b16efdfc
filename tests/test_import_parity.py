"""sd-scripts parity of the importers (issue 17): a config that names the steps trains them, values kohya_ss drops
are dropped the same way, Windows paths keep their text, a refused rank takes its alpha with it, and each sample
file in tests/data/imports/ resolves to the run sd-scripts would do. The expected values are written from
sd-scripts' own semantics (library/train_util.py, train_network.py) and kohya_ss's train_model, not from Danlu."""

import json
import math
from pathlib import Path

import pytest
from conftest import run_cli, write_config
from PIL import Image

from trainer.checks.preflight import scan_and_plan
from trainer.config.io import validate_config
from trainer.presets.format import Preset, apply_preset, changed_settings
from trainer.presets.importers import import_file
from trainer.presets.paths import name_of, parent_of, split_folder, with_name

DATA = Path(__file__).parent / "data" / "imports"


def write(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(content) if name.endswith(".json") else content, encoding="utf-8")
    return path


def unmapped(result) -> dict:
    return {item.key: item for item in result.unmapped}


def resolved(result, **machine) -> dict:
    """The config a user trains after importing: the preset `preset import` writes, applied over the defaults with
    this computer's paths."""
    config, _ = apply_preset(Preset("imported", changed_settings(result.settings)), machine)
    return config


# --- steps named without epochs train those steps ----------------------------------------------------------

def test_check_prints_the_steps_of_a_config_that_names_only_the_steps(tmp_path, make_config):
    config = make_config(max_train_steps=7)
    config.pop("max_train_epochs")  # sd-scripts: max_train_steps decides unless max_train_epochs is given
    checked = run_cli("check", write_config(tmp_path / "c.yaml", config))
    assert checked.returncode == 0, checked.stderr
    assert "total steps = max_train_steps 7" in checked.stdout and "ignored" not in checked.stdout


def test_apply_preset_with_only_the_steps_trains_the_steps():
    config, changed = apply_preset(Preset("p", {"max_train_steps": 3000}), {"max_train_epochs": 10})
    assert (config["max_train_epochs"], config["max_train_steps"]) == (None, 3000)
    assert "max_train_epochs" in changed
    with_epochs, _ = apply_preset(Preset("p", {"max_train_steps": 3000, "max_train_epochs": 4}), {})
    assert with_epochs["max_train_epochs"] == 4  # given both, the epochs win, as in sd-scripts


@pytest.mark.parametrize("name, content", [
    ("kohya.json", {"LoRA_type": "Standard", "epoch": 1, "max_train_epochs": "", "max_train_steps": "3000"}),
    ("sd_scripts.toml", "max_train_steps = 3000\n"),
    ("lora_scripts.toml", 'model_train_type = "sd-lora"\nmax_train_steps = 3000\n'),
    ("lora_scripts_preset.toml", '[metadata]\nname = "steps"\n[data]\nmax_train_steps = 3000\n'),
])
def test_each_importer_trains_the_steps_a_file_names_alone(tmp_path, name, content):
    config = validate_config(resolved(import_file(write(tmp_path, name, content))))
    assert (config.max_train_epochs, config.max_train_steps) == (None, 3000)


# --- kohya_ss drops what its GUI drops, and the report says what changed -----------------------------------

def test_kohya_max_grad_norm_0_trains_with_sd_scripts_default_and_is_reported(tmp_path):
    # kohya_ss's train_model leaves 0 out of sd-scripts' arguments, so sd-scripts clips at its default 1.0
    result = import_file(write(tmp_path, "k.json", {"LoRA_type": "Standard", "max_grad_norm": 0}))
    assert validate_config(resolved(result)).max_grad_norm == 1.0
    [change] = [c for c in result.changed if c.key == "max_grad_norm"]
    assert (change.value, change.setting, change.new) == (0, "max_grad_norm", 1.0)
    assert "changed: max_grad_norm = 0 -> max_grad_norm = 1.0: kohya_ss leaves 0 out" in "\n".join(result.report())


def test_preset_import_prints_the_report(tmp_path):
    source = write(tmp_path, "k.json", {"LoRA_type": "Standard", "max_grad_norm": 0, "epoch": 3, "frobnicate": 1})
    imported = run_cli("preset", "import", source, "-o", tmp_path / "k.yaml")
    assert imported.returncode == 0, imported.stderr
    lines = imported.stdout.splitlines()
    assert any(line.startswith("changed: max_grad_norm = 0 -> max_grad_norm = 1.0: ") for line in lines)
    assert any(line.startswith("changed: epoch = 3 -> max_train_epochs = 3: kohya_ss passes") for line in lines)
    assert any(line.startswith("not imported: frobnicate = 1: ") for line in lines)


def test_kohya_zero_with_the_same_meaning_in_danlu_is_not_reported(tmp_path):
    result = import_file(write(tmp_path, "k.json", {"LoRA_type": "Standard", "min_snr_gamma": 0, "vae": ""}))
    assert result.changed == [] and result.report() == []


def test_lora_scripts_preview_form_is_reported_as_changed(tmp_path):
    text = 'model_train_type = "sd-lora"\npositive_prompts = "a cat"\nsample_width = 640\n'
    result = import_file(write(tmp_path, "form.toml", text))
    [change] = [c for c in result.changed if c.setting == "sample_prompts"]
    assert (change.key, change.value) == ("positive_prompts", "a cat")
    assert change.new == ["a cat --w 640 --h 512 --l 7 --s 24 --d 2333"] and "preview form" in change.reason


# --- Windows paths keep their text ------------------------------------------------------------------------

@pytest.mark.parametrize("name, template", [
    ("kohya.json", None),
    ("sd_scripts.toml", "train_data_dir = '{data}'\noutput_dir = '{out}'\n"),
    ("lora_scripts.toml", "model_train_type = 'sd-lora'\ntrain_data_dir = '{data}'\noutput_dir = '{out}'\n"),
])
def test_windows_paths_keep_their_text_in_every_importer(tmp_path, name, template):
    data, out = r"C:\data\img", "D:/lora/10_x"
    content = {"LoRA_type": "Standard", "train_data_dir": data, "output_dir": out} if template is None else \
        template.format(data=data, out=out)
    settings = resolved(import_file(write(tmp_path, name, content)))
    assert (settings["train_data_dir"], settings["output_dir"]) == (data, out)


@pytest.mark.parametrize("folders, parent", [
    ([r"C:\data\img\10_alice", r"C:\data\img\4_bob"], r"C:\data\img"),
    (["D:/lora/10_x"], "D:/lora"),
    ([r"C:\10_x"], "C:\\"),
])
def test_the_dataset_importer_keeps_windows_folders(tmp_path, folders, parent):
    subsets = "".join(f"  [[datasets.subsets]]\n  image_dir = '{folder}'\n"
                      f"  num_repeats = {name_of(folder).partition('_')[0]}\n" for folder in folders)
    result = import_file(write(tmp_path, "dataset.toml", "[[datasets]]\nresolution = 512\n" + subsets))
    assert result.settings["train_data_dir"] == parent and not result.unmapped


@pytest.mark.parametrize("folder, renamed", [
    (r"C:\data\img\alice", r"C:\data\img\3_alice"),
    ("D:/lora/alice", "D:/lora/3_alice"),
    (r"\\server\share\alice", r"\\server\share\3_alice"),
])
def test_rename_hints_name_the_real_folder(tmp_path, folder, renamed):
    text = f"[[datasets]]\nresolution = 512\n  [[datasets.subsets]]\n  image_dir = '{folder}'\n  num_repeats = 3\n"
    result = import_file(write(tmp_path, "dataset.toml", text))
    assert f"rename {folder} to {renamed}" in unmapped(result)["datasets.0.subsets.0.image_dir"].reason


def test_folder_paths_split_at_either_separator():
    assert split_folder(r"C:\data\img") == (r"C:\data", "\\", "img")
    assert split_folder("D:/lora/10_x/") == ("D:/lora", "/", "10_x")
    assert split_folder("/10_x") == ("/", "/", "10_x")
    assert split_folder("10_x") == ("", "", "10_x")
    assert (parent_of("10_x"), parent_of(r"C:\x")) == (".", "C:\\")
    assert with_name(r"C:\x", "3_x") == r"C:\3_x" and with_name("x", "3_x") == "3_x"


# --- a refused rank and its alpha go together, and the report says what is used instead -------------------

@pytest.mark.parametrize("name, content, refused, companion", [
    ("kohya.json", {"LoRA_type": "Standard", "network_dim": 2000, "network_alpha": 16}, "network_dim",
     "network_alpha"),
    ("kohya.json", {"LoRA_type": "Standard", "network_dim": 8, "network_alpha": -3}, "network_alpha",
     "network_dim"),
    ("sd_scripts.toml", 'network_module = "lycoris.kohya"\nnetwork_args = ["algo=locon", "conv_dim=2000", '
     '"conv_alpha=4"]\n', "network_args.conv_dim", "network_args.conv_alpha"),
    ("lora_scripts.toml", 'model_train_type = "sd-lora"\nnetwork_dim = 2000\nnetwork_alpha = 8\n', "network_dim",
     "network_alpha"),
])
def test_a_refused_rank_takes_its_alpha_with_it(tmp_path, name, content, refused, companion):
    result = import_file(write(tmp_path, name, content))
    skipped = unmapped(result)
    assert {refused, companion} <= set(skipped)
    assert f"goes with {refused.rpartition('.')[2]}" in skipped[companion].reason
    defaults, config = validate_config({}), validate_config(result.settings)
    for source in (refused, companion):  # neither is trained: both keep Danlu's default, named in the line
        key = source.rpartition(".")[2]
        assert getattr(config, key) == getattr(defaults, key)
        assert skipped[source].reason.endswith(f"; Danlu uses {key} = {getattr(defaults, key)!r} instead")


def test_lokr_full_matrix_rank_is_imported_with_its_alpha(tmp_path):
    text = ('network_module = "lycoris.kohya"\nnetwork_dim = 100000\nnetwork_alpha = 1\n'
            'network_args = ["algo=lokr", "factor=8"]\n')
    result = import_file(write(tmp_path, "lokr.toml", text))
    config = validate_config(resolved(result))
    assert (config.network_type, config.network_dim, config.network_alpha) == ("lokr", 100000, 1.0)
    assert not result.unmapped


# --- the sample files resolve to what sd-scripts would run -------------------------------------------------

def dataset(root: Path, size: tuple[int, int], repeats: int = 10, images: int = 6) -> Path:
    """train_data_dir with one folder N_alice of same-size images (one bucket), each with a .txt caption."""
    folder = root / "train" / f"{repeats}_alice"
    folder.mkdir(parents=True)
    for i in range(images):
        Image.new("RGB", size, (i * 30, 90, 160)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"alice, pose {i}", encoding="utf-8")
    return root / "train"


NETWORK = ("network_type", "network_dim", "network_alpha", "conv_dim", "conv_alpha")
OPTIMIZER = ("optimizer_type", "optimizer_args", "learning_rate", "unet_lr", "text_encoder_lr",
             "max_grad_norm")
SCHEDULER = ("lr_scheduler", "lr_scheduler_num_cycles", "lr_warmup_steps")
CAPTIONS = ("caption_extension", "shuffle_caption", "keep_tokens", "caption_dropout_rate", "flip_aug",
            "max_token_length", "clip_skip")
# 6 images × 10 repeats = 60 entries in one bucket.
SAMPLES = {
    # kohya_ss: max_train_steps empty, so train_model computes ceil(60 images×repeats / batch 2 / accumulation 1
    # × epoch 12 × reg factor 1) = 360 steps; LyCORIS LoHa (network_module lycoris.kohya, algo=loha); lr_warmup
    # 10 % is passed as lr_warmup_steps 0.1 (a ratio in sd-scripts); 0 and "" are left out, so sd-scripts'
    # defaults apply (lr_scheduler_num_cycles 1).
    "kohya_ss_loha.json": ((768, 768), 360, {
        "network_type": "loha", "network_dim": 32, "network_alpha": 16.0, "conv_dim": 8, "conv_alpha": 4.0,
        "optimizer_type": "AdamW8bit", "optimizer_args": ["weight_decay=0.05", "betas=0.9,0.99"],
        "learning_rate": 2e-4, "unet_lr": 2e-4, "text_encoder_lr": 1e-4, "max_grad_norm": 1.0,
        "lr_scheduler": "cosine", "lr_scheduler_num_cycles": 1, "lr_warmup_steps": 0.1,
        "caption_extension": ".txt", "shuffle_caption": True, "keep_tokens": 1, "caption_dropout_rate": 0.05,
        "flip_aug": True, "max_token_length": 150, "clip_skip": 2}),
    # sd-scripts: max_train_epochs 8 wins: 8 × ceil(60 / batch 4) = 120; network_alpha left out: 1
    # (train_network.py's default); algo=locon with conv_dim/conv_alpha from network_args.
    "sd_scripts_config.toml": ((512, 640), 120, {
        "network_type": "locon", "network_dim": 16, "network_alpha": 1.0, "conv_dim": 8, "conv_alpha": 4.0,
        "optimizer_type": "AdamW8bit", "optimizer_args": ["weight_decay=0.1", "betas=0.9,0.99"],
        "learning_rate": 1e-4, "unet_lr": 1e-4, "text_encoder_lr": 5e-5, "max_grad_norm": 1.0,
        "lr_scheduler": "cosine_with_restarts", "lr_scheduler_num_cycles": 3, "lr_warmup_steps": 50,
        "caption_extension": ".txt", "shuffle_caption": True, "keep_tokens": 1, "caption_dropout_rate": 0.0,
        "flip_aug": True, "max_token_length": 225, "clip_skip": 2}),
    # lora-scripts: 10 epochs × ceil(60 / batch 1) = 600; lr_restart_cycles is its older lr_scheduler_num_cycles;
    # learning_rate left out, but unet_lr and text_encoder_lr both given, so it is not used.
    "lora_scripts_config.toml": ((512, 768), 600, {
        "network_type": "lora", "network_dim": 32, "network_alpha": 16.0,
        "optimizer_type": "AdamW8bit", "unet_lr": 1e-4, "text_encoder_lr": 1e-5, "max_grad_norm": 1.0,
        "lr_scheduler": "cosine_with_restarts", "lr_scheduler_num_cycles": 2, "lr_warmup_steps": 0,
        "caption_extension": ".txt", "shuffle_caption": True, "keep_tokens": 0, "max_token_length": 225,
        "clip_skip": 2}),
    # a lora-scripts preset holds what differs from its form's defaults: max_train_epochs 10, batch 1, so
    # 10 × 60 = 600; lycoris_algo lokr and lokr_factor 8 become algo=lokr, factor=8; prodigy_d_coef goes into
    # optimizer_args after optimizer_args_custom.
    "lora_scripts_preset.toml": ((768, 768), 600, {
        "network_type": "lokr", "network_dim": 16, "network_alpha": 8.0, "conv_dim": 8, "conv_alpha": 4.0,
        "factor": 8, "optimizer_type": "Prodigy", "learning_rate": 1.0,
        "optimizer_args": ["decouple=True", "weight_decay=0.01", "d_coef=2.0"]}),
}


@pytest.mark.parametrize("name", SAMPLES)
def test_a_sample_file_resolves_to_the_run_sd_scripts_would_do(tmp_path, name):
    size, total_steps, expected = SAMPLES[name]
    data = dataset(tmp_path, size)
    config = validate_config(resolved(import_file(DATA / name), train_data_dir=str(data)))
    assert {key: getattr(config, key) for key in expected} == expected
    _, _, plan = scan_and_plan(config)
    assert plan.total_steps == total_steps
    if config.max_train_epochs:  # sd-scripts: epochs × ceil(batches / accumulation)
        assert total_steps == config.max_train_epochs * math.ceil(60 / config.train_batch_size)


def test_the_dataset_sample_resolves_to_its_captions_and_batches():
    # [general] options hold for every subset unless one sets its own; flip_aug is set for one subset only
    config = validate_config(import_file(DATA / "sd_scripts_dataset.toml").settings)
    assert (config.train_batch_size, config.resolution, config.bucket_reso_steps) == (2, "768,512", 64)
    assert (config.caption_extension, config.shuffle_caption, config.keep_tokens) == (".txt", True, 1)
    assert (config.flip_aug, config.caption_dropout_rate) == (False, 0.0)  # listed: they differ between subsets
