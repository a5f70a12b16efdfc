"""The main job without a GUI yet: the offline demo builds its model and data and trains to a LoRA file."""

from pathlib import Path

import safetensors
from conftest import read_events, run_cli

from trainer.config import TrainConfig
from trainer.demo.leftovers import DEMO_PATHS, demo_leftovers, demo_settings


def test_demo_trains_offline_to_a_lora_with_samples(tmp_path):
    result = run_cli("demo", "--dir", tmp_path / "demo", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    # bitsandbytes, unused by the demo, is not imported: at import it asks the Hub for CPU kernels and logs a failure
    assert "kernels-community" not in result.stderr and "bitsandbytes" not in result.stderr
    outputs = tmp_path / "demo" / "outputs"
    (run_dir,) = (outputs / "runs").iterdir()
    events = read_events(run_dir)
    assert events[-1] == {**events[-1], "type": "finished", "status": "completed"}
    assert [e for e in events if e["type"] == "sample"] and list((run_dir / "samples").glob("*.png"))
    with safetensors.safe_open(str(outputs / "demo_lora.safetensors"), "pt") as handle:
        assert handle.metadata()["ss_training_comment"].startswith("Danlu demo")
    assert (tmp_path / "demo" / "config.yaml").is_file()  # an example config to copy


def _demo_form(root: Path) -> dict:
    """The form the GUI's demo button fills (trainer/demo/prepare.demo_config, without building anything)."""
    paths = {key: str(root / place) for key, place in DEMO_PATHS.items()}
    return {**TrainConfig().model_dump(), **paths, "output_dir": str(root / "outputs"), **demo_settings()}


def test_the_demos_own_settings_go_back_to_defaults_once_the_user_picks_their_dataset(tmp_path):
    root = tmp_path / "demo"
    form = _demo_form(root)
    assert demo_leftovers(form, root) == {}  # still the demo
    mine = {**form, "train_data_dir": str(tmp_path / "我的 图片"), "network_dim": 32}  # network_dim: the user's own
    reset = demo_leftovers(mine, root)
    assert reset["max_bucket_reso"] == 1024 and reset["resolution"] == "512,512" and reset["min_bucket_reso"] == 256
    assert reset["overwrite"] is False and reset["sample_prompts"] is None and reset["training_comment"] == ""
    assert "network_dim" not in reset and "pretrained_model_name_or_path" not in reset
    assert demo_leftovers({**mine, **reset}, root) == {}  # once reset, the form is no longer the demo's
    assert demo_leftovers({**form, "pretrained_model_name_or_path": "D:/models/sd15.safetensors"}, root)


def test_the_gui_says_which_demo_settings_it_reset(tmp_path, monkeypatch):
    from ui import presets_tab, settings
    from ui.fields import config_from_form, form_values

    monkeypatch.setattr(settings, "demo_root", lambda: tmp_path / "demo")
    form = _demo_form(tmp_path / "demo")
    assert presets_tab.leave_demo("zh", tuple(form_values(form)))[1:] == presets_tab._keep()
    mine = {**form, "train_data_dir": str(tmp_path / "mine")}
    message, *values = presets_tab.leave_demo("zh", tuple(form_values(mine)))
    assert "演示专用的设置" in message and "`max_bucket_reso`: `128` → `1024`" in message
    assert config_from_form(values)["max_bucket_reso"] == 1024
