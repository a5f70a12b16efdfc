"""Config files in YAML, JSON and TOML, and one clear line per problem."""

import json

import pytest
from conftest import run_cli, write_config

from trainer.config import TrainConfig
from trainer.config.io import ConfigError, load_config, read_config_file, validate_config


def test_yaml_json_and_sd_scripts_toml_give_the_same_config(tmp_path):
    values = {"network_dim": 16, "network_alpha": 8, "resolution": "768,512", "learning_rate": 2e-4}
    write_config(tmp_path / "a.yaml", values)
    (tmp_path / "a.json").write_text(json.dumps(values))
    # sd-scripts --config_file TOML: sections are only for people, keys are flat
    (tmp_path / "a.toml").write_text(
        '[model_arguments]\nresolution = "768,512"\n[additional_network_arguments]\n'
        'network_dim = 16\nnetwork_alpha = 8\n[optimizer_arguments]\nlearning_rate = 2e-4\n')
    configs = [load_config(tmp_path / name) for name in ("a.yaml", "a.json", "a.toml")]
    assert configs[0] == configs[1] == configs[2]
    assert configs[0].resolution_wh == (768, 512) and configs[0].network_dim == 16


@pytest.mark.parametrize("value, expected", [(512, (512, 512)), ("512", (512, 512)), ("768,512", (768, 512)),
                                             ([640, 448], (640, 448))])
def test_resolution_forms(value, expected):
    assert validate_config({"resolution": value}).resolution_wh == expected


def test_every_problem_gets_one_line_naming_key_value_and_rule():
    with pytest.raises(ConfigError) as caught:
        validate_config({"netwrok_dim": 8, "network_dim": 0, "optimizer_type": "Adam", "resolution": "big",
                         "mem_eff_attn": True})
    lines = caught.value.problems
    assert len(lines) == 5
    assert "netwrok_dim: unknown key; did you mean 'network_dim'?" in lines
    assert any(l.startswith("network_dim: 0 is not valid") and "greater than or equal to 1" in l for l in lines)
    assert any(l.startswith("optimizer_type: 'Adam'") and "'AdamW'" in l for l in lines)
    assert any(l.startswith("resolution: 'big'") for l in lines)
    assert any(l.startswith("mem_eff_attn: not needed") for l in lines)


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="choose at most one"):
        validate_config({"network_train_unet_only": True, "network_train_text_encoder_only": True})
    with pytest.raises(ConfigError, match="max_train_epochs and max_train_steps are both empty"):
        validate_config({"max_train_epochs": None})


def test_unreadable_file_is_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("network_dim = = 3")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        read_config_file(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        read_config_file(tmp_path / "missing.yaml")


def test_cli_reports_errors_without_traceback(tmp_path, make_config):
    path = write_config(tmp_path / "c.yaml", make_config(network_dimm=4, save_precision="fp8"))
    for command in ("check", "train"):
        result = run_cli(command, path)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr + result.stdout
        assert "error: network_dimm: unknown key; did you mean 'network_dim'?" in result.stderr
        assert "error: save_precision: 'fp8' is not valid" in result.stderr
    assert not (tmp_path / "out").exists()  # nothing was started


def test_fp16_without_cuda_is_a_clear_error(tmp_path, make_config):
    result = run_cli("check", write_config(tmp_path / "c.yaml", make_config(mixed_precision="fp16")))
    assert result.returncode == 2
    assert "error: mixed_precision: 'fp16' needs an NVIDIA GPU" in result.stderr


def test_missing_model_and_empty_dataset_are_reported(tmp_path, make_config):
    empty = tmp_path / "empty"
    (empty / "10_x").mkdir(parents=True)
    config = make_config(pretrained_model_name_or_path=str(tmp_path / "nope"), train_data_dir=str(empty))
    check = run_cli("check", write_config(tmp_path / "c.yaml", config))
    assert check.returncode == 2 and "Traceback" not in check.stderr
    assert "error: train_data_dir:" in check.stderr and "no training images" in check.stderr
    assert "error: pretrained_model_name_or_path: " in check.stderr and "does not exist" in check.stderr


def test_a_model_folder_that_does_not_load_is_a_clear_error(tmp_path, make_config):
    broken = tmp_path / "model"
    (broken / "unet").mkdir(parents=True)
    result = run_cli("train", write_config(tmp_path / "c.yaml", make_config(pretrained_model_name_or_path=str(broken))))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: pretrained_model_name_or_path: cannot load" in result.stderr and "hint:" in result.stderr


def test_full_config_round_trips_through_yaml(tmp_path):
    from trainer.config.io import config_to_yaml

    config = TrainConfig(network_dim=12, sample_prompts=["a", "b"], v2=False)
    (tmp_path / "c.yaml").write_text(config_to_yaml(config))
    assert load_config(tmp_path / "c.yaml") == config
