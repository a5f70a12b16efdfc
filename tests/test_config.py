"""Config files in YAML, JSON and TOML, their versions and migrations, and one clear line per problem naming
its keys."""

import ast
import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_cli, write_config

from trainer.common.errors import UserError
from trainer.config import TrainConfig, io, migrations
from trainer.config.io import ConfigError, config_to_yaml, load_config, read_config_file, validate_config
from trainer.presets.format import read_preset


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
    problems = caught.value.problems
    lines = [str(problem) for problem in problems]
    assert len(lines) == 5 and str(caught.value) == "\n".join(lines)
    assert {problem.keys for problem in problems} == {("netwrok_dim",), ("network_dim",), ("optimizer_type",),
                                                      ("resolution",), ("mem_eff_attn",)}
    assert "netwrok_dim: unknown key; did you mean 'network_dim'?" in lines
    assert any(l.startswith("network_dim: 0 is not valid") and "greater than or equal to 1" in l for l in lines)
    assert any(l.startswith("optimizer_type: 'Adam'") and "'AdamW'" in l for l in lines)
    assert any(l.startswith("resolution: 'big'") for l in lines)
    assert any(l.startswith("mem_eff_attn: not needed") for l in lines)


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="choose at most one") as caught:
        validate_config({"network_train_unet_only": True, "network_train_text_encoder_only": True})
    (problem,) = caught.value.problems  # the line as before, the keys beside it for the fields
    assert problem.keys == ("network_train_unet_only", "network_train_text_encoder_only")
    assert str(problem) == "network_train_unet_only and network_train_text_encoder_only: choose at most one"
    with pytest.raises(ConfigError, match="max_train_epochs and max_train_steps are both empty") as caught:
        validate_config({"max_train_epochs": None})
    assert caught.value.problems[0].keys == ("max_train_epochs", "max_train_steps")
    with pytest.raises(ConfigError) as caught:  # sd-scripts' network_args are read by a rule of their own
        validate_config({"network_args": ["conv_dim"]})
    assert caught.value.problems[0].keys == ("network_args",)


def test_unknown_keys_say_what_to_do_in_a_hint():
    with pytest.raises(ConfigError) as caught:
        validate_config({"network_dimm": 8, "logging_dir": "logs"})
    unknown, not_needed = caught.value.problems
    assert (unknown.keys, unknown.message, unknown.hint) == (("network_dimm",), "unknown key",
                                                             "did you mean 'network_dim'?")
    assert not_needed.keys == ("logging_dir",) and not_needed.hint == "remove this key"


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
    assert "error: pretrained_model_name_or_path: cannot load" in result.stderr and "pick the model" in result.stderr


def test_full_config_round_trips_through_yaml(tmp_path):
    from trainer.config.io import config_to_yaml

    config = TrainConfig(network_dim=12, sample_prompts=["a", "b"], v2=False)
    (tmp_path / "c.yaml").write_text(config_to_yaml(config))
    assert load_config(tmp_path / "c.yaml") == config


def test_a_user_error_may_name_its_key():
    error = UserError("'x.safetensors' does not exist", "check the path", key="vae")
    assert error.message == str(error) == "vae: 'x.safetensors' does not exist"
    (problem,) = error.problems
    assert problem.keys == ("vae",) and str(problem) == "vae: 'x.safetensors' does not exist; check the path"


# --- versions --------------------------------------------------------------------------------------------

def test_a_config_of_today_loads_after_a_later_danlu_renamed_a_key(tmp_path, monkeypatch):
    """Version 2 renames network_dim to network_rank: a run folder's config.yaml written today, a config written
    before configs carried a version, and a preset all load with the value under the new name."""
    today = tmp_path / "run_config.yaml"
    today.write_text(config_to_yaml(TrainConfig(network_dim=16)))
    unversioned = write_config(tmp_path / "mine.yaml", {"network_dim": 24})
    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump({"preset_version": 1, "name": "p", "settings": {"network_dim": 32}}))

    class LaterConfig(TrainConfig):  # the later schema
        network_rank: int = 8

    def rename(settings: dict) -> dict:
        if "network_dim" in settings:
            settings["network_rank"] = settings.pop("network_dim")
        return settings

    monkeypatch.setattr(io, "TrainConfig", LaterConfig)
    monkeypatch.setattr(migrations, "CURRENT_VERSION", 2)
    monkeypatch.setitem(migrations.STEPS, 1, rename)
    assert load_config(today).network_rank == 16 and load_config(unversioned).network_rank == 24
    assert read_preset(preset).settings == {"network_rank": 32}
    assert yaml.safe_load(config_to_yaml({"network_rank": 16})) == {"danlu_version": 2, "network_rank": 16}
    newer = write_config(tmp_path / "newer.yaml", {"danlu_version": 3, "network_rank": 16})
    with pytest.raises(ConfigError, match="danlu_version: 3 was written by a newer Danlu .*; update Danlu"):
        load_config(newer)


def test_every_config_file_danlu_writes_carries_the_version(tmp_path, make_config, monkeypatch):
    from trainer.run import runner

    assert yaml.safe_load(config_to_yaml(TrainConfig()))["danlu_version"] == migrations.CURRENT_VERSION
    assert next(iter(yaml.safe_load(config_to_yaml({"network_dim": 8})))) == "danlu_version"  # the GUI's form

    class Spawned:  # the training process is not started: the run folder is what is looked at
        pid, started_at, popen = 0, 0.0, None

    monkeypatch.setattr(runner, "_active", None)
    monkeypatch.setattr(runner, "start_detached", lambda args, run_dir: Spawned())
    handle = runner.start(validate_config(make_config()), output_dir=tmp_path / "elsewhere")
    written = yaml.safe_load((handle.run_dir / runner.CONFIG_FILE).read_text(encoding="utf-8"))
    assert written["danlu_version"] == migrations.CURRENT_VERSION
    assert written["output_dir"] == str(tmp_path / "elsewhere") and written["network_dim"] == 4
    # Every YAML file is written through config_to_yaml, or as a preset next to its version.
    writers = {str(path.relative_to(REPO)) for folder in ("trainer", "ui") for path in (REPO / folder).rglob("*.py")
               if _calls(path, "safe_dump")}
    assert writers == {"trainer/config/io.py", "trainer/presets/format.py"}


def _calls(path: Path, name: str) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(node, ast.Attribute) and node.attr == name for node in ast.walk(tree))
