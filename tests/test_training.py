"""Training behaviour in-process on the tiny SD1.5 model: outputs, cadence, stop, overwrite, options."""

import json

import numpy as np
import pytest
import safetensors
import torch
from conftest import read_events, run_cli, write_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from trainer.common.errors import ConfigError
from trainer.config.io import validate_config
from trainer.run.events import STOP_FILE
from trainer.training.export import load_lora
from trainer.training.loop import train


def run(tmp_path, make_config, name="run", **overrides):
    run_dir = tmp_path / name
    status = train(validate_config(make_config(**overrides)), run_dir)
    return status, read_events(run_dir), run_dir


def of_type(events, kind):
    return [e for e in events if e["type"] == kind]


def test_samples_follow_cadence_in_events_files_and_tensorboard(tmp_path, make_config):
    status, events, run_dir = run(
        tmp_path, make_config, max_train_steps=None, max_train_epochs=2, sample_every_n_steps=8,
        sample_every_n_epochs=2, sample_at_first=True,
        sample_prompts=["red circle --w 64 --h 64 --s 2 --d 3", "blue square --n red --s 2"])
    assert status == "completed"
    steps_per_epoch = next(e for e in events if e["type"] == "plan")["steps_per_epoch"]
    samples = of_type(events, "sample")
    expected_steps = [0] + [s for s in range(1, 2 * steps_per_epoch + 1) if s % 8 == 0] + [2 * steps_per_epoch]
    assert sorted({e["step"] for e in samples}) == sorted(set(expected_steps))
    assert {e["prompt"] for e in samples} == {"red circle", "blue square"}
    for event in samples:
        assert (run_dir / "samples" / event["path"].split("/")[-1]).is_file()
    assert (run_dir / "samples" / f"e0002-s{2 * steps_per_epoch:06d}-p1.png").is_file()
    tb = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0}).Reload()
    assert {"sample/p0", "sample/p1"} <= set(tb.Tags()["images"])
    assert {"loss/current", "loss/average", "lr/unet", "lr/text_encoder"} <= set(tb.Tags()["scalars"])
    assert len(tb.Scalars("loss/current")) == 2 * steps_per_epoch


def test_epoch_files_and_final_file(tmp_path, make_config):
    status, events, _ = run(tmp_path, make_config, max_train_steps=None, max_train_epochs=3,
                            save_every_n_epochs=1)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("*.safetensors")) == [
        "test-000001.safetensors", "test-000002.safetensors", "test.safetensors"]
    assert [e["epoch"] for e in of_type(events, "checkpoint")] == [1, 2, 3]
    _, meta = load_lora(out / "test-000001.safetensors")
    assert meta["ss_epoch"] == "1"


def test_an_earlier_file_is_never_silently_overwritten(tmp_path, make_config):
    run(tmp_path, make_config, max_train_steps=1)
    before = (tmp_path / "out" / "test.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="already exists from an earlier run"):
        run(tmp_path, make_config, name="again", max_train_steps=1, seed=8)
    assert (tmp_path / "out" / "test.safetensors").read_bytes() == before
    status, _, _ = run(tmp_path, make_config, name="third", max_train_steps=1, seed=8, overwrite=True)
    assert status == "completed" and (tmp_path / "out" / "test.safetensors").read_bytes() != before


def test_stop_file_saves_and_finishes_as_stopped(tmp_path, make_config):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / STOP_FILE).write_text("")
    status = train(validate_config(make_config(max_train_steps=50)), run_dir)
    events = read_events(run_dir)
    assert status == "stopped" and events[-1] == {**events[-1], "type": "finished", "status": "stopped"}
    assert len(of_type(events, "step")) == 1
    assert (tmp_path / "out" / "test.safetensors").is_file()


def test_same_seed_same_lora_other_seed_other_lora(tmp_path, make_config):
    files = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        run(tmp_path, make_config, name=name, seed=seed, output_name=name, max_train_steps=3)
        files.append(load_lora(tmp_path / "out" / f"{name}.safetensors")[0])
    assert all(torch.equal(files[0][k], files[1][k]) for k in files[0])
    assert any(not torch.equal(files[0][k], files[2][k]) for k in files[0] if "lora_up" in k)


@pytest.mark.parametrize("option, prefix", [("network_train_unet_only", "lora_unet_"),
                                            ("network_train_text_encoder_only", "lora_te_text_model_encoder_")])
def test_train_only_one_part(tmp_path, make_config, option, prefix):
    _, events, _ = run(tmp_path, make_config, max_train_steps=2, **{option: True})
    tensors, meta = load_lora(tmp_path / "out" / "test.safetensors")
    assert tensors and all(k.startswith(prefix) for k in tensors)
    assert set(of_type(events, "step")[0]["lrs"]) == {"unet" if "unet" in option else "text_encoder"}


def test_alpha_is_stored_and_learning_rates_per_group(tmp_path, make_config):
    _, events, _ = run(tmp_path, make_config, max_train_steps=2, network_dim=4, network_alpha=1,
                       unet_lr=3e-4, text_encoder_lr=5e-5, lr_scheduler="constant")
    tensors, meta = load_lora(tmp_path / "out" / "test.safetensors")
    alphas = {float(v) for k, v in tensors.items() if k.endswith(".alpha")}
    assert alphas == {1.0}
    assert all(v.shape[0] == 4 for k, v in tensors.items() if k.endswith("lora_down.weight"))
    assert of_type(events, "step")[0]["lrs"] == {"unet": 3e-4, "text_encoder": 5e-5}
    assert meta["ss_unet_lr"] == "0.0003" and meta["ss_text_encoder_lr"] == "5e-05"
    for key in ("ss_network_module", "ss_base_model_version", "ss_v2", "ss_optimizer", "ss_lr_scheduler",
                "ss_num_train_images", "ss_num_epochs", "ss_resolution", "ss_seed", "ss_clip_skip",
                "ss_tag_frequency", "ss_dataset_dirs", "sshs_model_hash"):
        assert key in meta, key
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_network_module"] == "networks.lora"
    frequency = json.loads(meta["ss_tag_frequency"])
    assert set(frequency) == {"5_circle", "3_square"} and frequency["5_circle"]["circle"] == 1  # no caption file
    assert sum(frequency["3_square"].values()) == 2 * 3 + 1  # 3 captions of two tags, one class-token image
    assert json.loads(meta["ss_dataset_dirs"])["5_circle"] == {"n_repeats": 5, "img_count": 6}


def test_warmup_then_cosine_decay(tmp_path, make_config):
    _, events, _ = run(tmp_path, make_config, max_train_steps=8, lr_warmup_steps=3, lr_scheduler="cosine",
                       learning_rate=1e-3)
    lrs = [e["lr"] for e in of_type(events, "step")]
    assert lrs[0] == 0 and lrs[1] < lrs[2] < lrs[3] == pytest.approx(1e-3)
    assert lrs[3] > lrs[5] > lrs[7] > 0


def test_constant_schedule_honours_warmup(tmp_path, make_config):
    _, events, _ = run(tmp_path, make_config, max_train_steps=4, lr_warmup_steps=2, lr_scheduler="constant")
    assert [e["lr"] for e in of_type(events, "step")] == pytest.approx([0, 5e-4, 1e-3, 1e-3])


def test_gradient_accumulation_groups_batches(tmp_path, make_config):
    _, events, _ = run(tmp_path, make_config, max_train_steps=None, max_train_epochs=1,
                       gradient_accumulation_steps=3)
    plan = of_type(events, "plan")[0]
    assert plan["steps_per_epoch"] == -(-plan["batches_per_epoch"] // 3)
    assert len(of_type(events, "step")) == plan["steps_per_epoch"]


def test_bf16_mixed_precision_trains_on_cpu(tmp_path, make_config):
    path = write_config(tmp_path / "c.yaml", make_config(mixed_precision="bf16", max_train_steps=2,
                                                         save_precision="bf16"))
    result = run_cli("train", path, "--run-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert np.isfinite([e["loss"] for e in of_type(read_events(tmp_path / "run"), "step")]).all()
    with safetensors.safe_open(str(tmp_path / "out" / "test.safetensors"), "pt") as handle:
        assert handle.get_tensor(next(iter(handle.keys()))).dtype == torch.bfloat16
