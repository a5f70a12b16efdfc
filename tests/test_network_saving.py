"""Network regularisers, continuing from a LoRA file, and the saving options."""

import pytest
import safetensors
import torch
from conftest import read_events
from lora_helpers import add_lora

from trainer.adapters.layers import ADAPTER, add_dropouts, apply_max_norm, lora_layers
from trainer.common.errors import UserError
from trainer.config.io import validate_config
from trainer.training.export import load_lora
from trainer.training.loop import train


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)
        self.conv = torch.nn.Conv2d(8, 8, 1)


def tiny_lora(dim=4, **dropouts):
    torch.manual_seed(0)
    model = Tiny()
    add_lora(model, ["proj", "conv"], dim, dim)
    add_dropouts(model, dropouts.get("network"), dropouts.get("rank"), dropouts.get("module"))
    return model


def down_output(model, name, x):
    return lora_layers(model)[name].lora_A[ADAPTER](x)


def test_rank_dropout_zeroes_whole_ranks_per_sample_and_scales_the_rest():
    model = tiny_lora(rank=0.5)
    x = torch.randn(64, 3, 8)
    plain = lora_layers(model)["proj"].lora_A[ADAPTER].weight @ x.transpose(1, 2)  # (64, r, 3)
    model.train()
    out = down_output(model, "proj", x).transpose(1, 2)
    kept = (out != 0).all(dim=2)  # per sample and rank: all tokens kept, or none
    dropped = (out == 0).all(dim=2)
    assert (kept | dropped).all() and 0.3 < dropped.float().mean() < 0.7
    assert torch.allclose(out[kept], plain[kept] * 2, atol=1e-5)
    model.eval()
    assert torch.allclose(down_output(model, "proj", x).transpose(1, 2), plain, atol=1e-5)
    conv_out = down_output(model.train(), "conv", torch.randn(16, 8, 2, 2))
    per_channel = (conv_out == 0).flatten(2).all(dim=2)
    assert per_channel.any() and not per_channel.all()


def test_network_dropout_drops_single_features_only_in_training():
    model = tiny_lora(network=0.5).train()
    out = down_output(model, "proj", torch.randn(32, 5, 8))
    assert 0.3 < (out == 0).float().mean() < 0.7
    assert (down_output(model.eval(), "proj", torch.randn(32, 5, 8)) != 0).all()


def test_module_dropout_switches_a_module_off_for_a_forward():
    model = tiny_lora(module=0.5).train()
    layer = lora_layers(model)["proj"]
    torch.nn.init.normal_(layer.lora_B[ADAPTER].weight)
    zeroed = sum(bool((layer.lora_B[ADAPTER](torch.randn(2, 4)) == 0).all()) for _ in range(200))
    assert 60 < zeroed < 140
    layer.eval()
    assert not (layer.lora_B[ADAPTER](torch.randn(2, 4)) == 0).all()


def test_max_norm_shrinks_only_modules_above_the_limit():
    model = tiny_lora()
    layers = list(lora_layers(model).values())
    torch.nn.init.normal_(layers[0].lora_B[ADAPTER].weight, std=10.0)  # big
    torch.nn.init.normal_(layers[1].lora_B[ADAPTER].weight, std=1e-4)  # small
    small_before = layers[1].lora_B[ADAPTER].weight.detach().clone()
    scaled, _, largest = apply_max_norm(layers, 1.0)
    assert scaled == 1 and largest == pytest.approx(1.0, rel=1e-4)
    big = layers[0]
    updown = big.lora_B[ADAPTER].weight @ big.lora_A[ADAPTER].weight * big.scaling[ADAPTER]
    assert updown.norm().item() == pytest.approx(1.0, rel=1e-4)
    assert torch.equal(layers[1].lora_B[ADAPTER].weight, small_before)


def _run(tmp_path, make_config, name, **overrides):
    config = make_config(output_name=name, **overrides)
    return train(validate_config(config), tmp_path / f"run-{name}")


def _norms(tensors):
    names = {k.rsplit(".", 2)[0] for k in tensors if k.endswith("lora_down.weight")}
    return [float((tensors[f"{n}.lora_up.weight"].flatten(1) @ tensors[f"{n}.lora_down.weight"].flatten(1)
                   * tensors[f"{n}.alpha"] / tensors[f"{n}.lora_down.weight"].shape[0]).norm()) for n in names]


def test_scale_weight_norms_caps_every_module_in_training(tmp_path, make_config):
    _run(tmp_path, make_config, "free", learning_rate=5e-2, max_train_steps=4)
    _run(tmp_path, make_config, "capped", learning_rate=5e-2, max_train_steps=4, scale_weight_norms=0.05)
    free, capped = (load_lora(tmp_path / "out" / f"{n}.safetensors")[0] for n in ("free", "capped"))
    assert max(_norms(free)) > 0.05
    assert max(_norms(capped)) <= 0.05 * 1.001


def test_network_weights_continue_from_a_file(tmp_path, make_config):
    _run(tmp_path, make_config, "first", learning_rate=5e-2, max_train_steps=3)
    first = tmp_path / "out" / "first.safetensors"
    _run(tmp_path, make_config, "second", learning_rate=1e-12, max_train_steps=1, network_weights=str(first))
    a, b = load_lora(first)[0], load_lora(tmp_path / "out" / "second.safetensors")[0]
    assert set(a) == set(b) and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # another rank: refused unless taken from the file
    with pytest.raises(UserError, match="rank differs from network_dim 8"):
        _run(tmp_path, make_config, "third", network_dim=8, network_alpha=2, network_weights=str(first))
    with pytest.raises(UserError, match="network_alpha: 4 differs from the alpha 2"):
        _run(tmp_path, make_config, "fourth", network_alpha=4, network_weights=str(first))
    _run(tmp_path, make_config, "fifth", network_dim=8, network_alpha=8, network_weights=str(first),
         dim_from_weights=True, learning_rate=1e-12, max_train_steps=1)
    fifth, meta = load_lora(tmp_path / "out" / "fifth.safetensors")
    assert all(torch.allclose(a[k], fifth[k], atol=1e-6) for k in a)
    assert meta["ss_network_dim"] == "8"  # config value; the file's dim is what loaders read
    assert next(v for k, v in fifth.items() if k.endswith("lora_down.weight")).shape[0] == 4


def test_step_files_keep_only_the_last_n_steps(tmp_path, make_config):
    _run(tmp_path, make_config, "s", max_train_steps=8, save_every_n_steps=2, save_last_n_steps=3)
    names = sorted(p.name for p in (tmp_path / "out").glob("s*.safetensors"))
    assert names == ["s-step00000004.safetensors", "s-step00000006.safetensors", "s.safetensors"]
    events = read_events(tmp_path / "run-s")
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [2, 4, 6, 8]


def test_epoch_files_keep_only_the_last_n_epochs_and_states(tmp_path, make_config):
    _run(tmp_path, make_config, "e", max_train_steps=None, max_train_epochs=4, save_every_n_epochs=1,
         save_last_n_epochs=2, save_state=True, save_last_n_epochs_state=1, save_state_on_train_end=True)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("e*.safetensors")) == [
        "e-000002.safetensors", "e-000003.safetensors", "e.safetensors"]
    assert sorted(p.name for p in out.glob("e*-state")) == ["e-000003-state", "e-state"]
    state = out / "e-000003-state"
    assert (state / "train_state.json").is_file() and (state / "model.safetensors").is_file()
    with safetensors.safe_open(str(state / "model.safetensors"), "pt") as handle:
        assert all("lora_" in key for key in handle.keys())  # the base model is not copied


def test_no_metadata_writes_none(tmp_path, make_config):
    _run(tmp_path, make_config, "n", max_train_steps=1, no_metadata=True)
    assert load_lora(tmp_path / "out" / "n.safetensors")[1] == {}


def test_attention_backends(tmp_path, make_config):
    from accelerate import Accelerator
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    from trainer.checks.preflight import run_preflight
    from trainer.run.events import RunLog
    from trainer.training.loop import Trainer

    for sdpa, processor in ((True, AttnProcessor2_0), (False, AttnProcessor)):
        config = validate_config(make_config(sdpa=sdpa))
        trainer = Trainer(config, run_preflight(config), RunLog(tmp_path / f"r{sdpa}"), Accelerator())
        trainer.setup()
        trainer.log.close()
        assert {type(p) for p in trainer.model.denoiser.attn_processors.values()} == {processor}
    with pytest.raises(UserError, match="xformers: cannot be used here"):
        _run(tmp_path, make_config, "x", xformers=True)


def test_full_bf16_keeps_lora_weights_in_bf16(tmp_path, make_config):

    from conftest import run_cli, write_config

    path = write_config(tmp_path / "c.yaml", make_config(mixed_precision="bf16", full_bf16=True, max_train_steps=2,
                                                         save_precision="float"))
    result = run_cli("train", path, "--run-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    tensors, _ = load_lora(tmp_path / "out" / "test.safetensors")
    # saved as float, but the values went through bf16: they are exactly representable in bf16
    assert all(torch.equal(t, t.to(torch.bfloat16).float()) for k, t in tensors.items() if "lora_" in k)


def test_resume_after_epoch_one_equals_an_uninterrupted_run(tmp_path, make_config):
    common = dict(max_train_steps=None, max_train_epochs=2, save_every_n_epochs=1, save_state=True,
                  lr_scheduler="cosine", lr_warmup_steps=3, shuffle_caption=True, flip_aug=True, noise_offset=0.05,
                  network_dropout=0.1, persistent_data_loader_workers=False)
    _run(tmp_path, make_config, "whole", **common)
    state = tmp_path / "out" / "whole-000001-state"
    assert state.is_dir()
    _run(tmp_path, make_config, "resumed", resume=str(state), **common)
    whole = load_lora(tmp_path / "out" / "whole.safetensors")[0]
    resumed = load_lora(tmp_path / "out" / "resumed.safetensors")[0]
    assert all(torch.allclose(whole[k], resumed[k], atol=1e-6) for k in whole)
    steps = {name: [(e["step"], e["lr"]) for e in read_events(tmp_path / f"run-{name}") if e["type"] == "step"]
             for name in ("whole", "resumed")}
    first_resumed = steps["resumed"][0][0]
    assert first_resumed > 1 and steps["resumed"] == [s for s in steps["whole"] if s[0] >= first_resumed]


def test_resume_from_the_end_state_equals_an_uninterrupted_run(tmp_path, make_config):
    """save_state also writes <output_name>-state at the end (sd-scripts); resuming from it trains on exactly."""
    common = dict(max_train_steps=None, lr_scheduler="constant", shuffle_caption=True, flip_aug=True,
                  noise_offset=0.05, persistent_data_loader_workers=False)
    _run(tmp_path, make_config, "whole", max_train_epochs=2, **common)
    _run(tmp_path, make_config, "first", max_train_epochs=1, save_state=True, **common)
    state = tmp_path / "out" / "first-state"
    assert (state / "train_state.json").is_file()
    _run(tmp_path, make_config, "rest", max_train_epochs=2, resume=str(state), **common)
    whole = load_lora(tmp_path / "out" / "whole.safetensors")[0]
    resumed = load_lora(tmp_path / "out" / "rest.safetensors")[0]
    assert set(whole) == set(resumed) and all(torch.allclose(whole[k], resumed[k], atol=1e-5) for k in whole)


def test_every_metadata_field_lands_in_the_file(tmp_path, make_config):
    from trainer.config import TrainConfig, field_info

    _run(tmp_path, make_config, "m", max_train_steps=1, noise_offset=0.05, min_snr_gamma=5)
    meta = load_lora(tmp_path / "out" / "m.safetensors")[1]
    for name in TrainConfig.model_fields:
        key = field_info(name)["metadata"]
        if key:
            assert (key if isinstance(key, str) else f"ss_{name}") in meta, name
    assert meta["ss_noise_offset"] == "0.05" and meta["ss_min_snr_gamma"] == "5.0"
    assert "ss_train_data_dir" not in meta and "ss_pretrained_model_name_or_path" not in meta  # no paths


def test_vae_batch_size_and_loader_per_epoch(tmp_path, make_config, monkeypatch):
    import trainer.dataset.latents as latents
    import trainer.training.loop as loop

    batches, loaders = [], []
    encode, make_loader = latents.encode_pixels, loop.make_loader
    monkeypatch.setattr(latents, "encode_pixels", lambda vae, px: batches.append(len(px)) or encode(vae, px))
    monkeypatch.setattr(loop, "make_loader", lambda *a: loaders.append(a) or make_loader(*a))
    _run(tmp_path, make_config, "v", vae_batch_size=3, max_train_steps=None, max_train_epochs=2,
         persistent_data_loader_workers=False)
    assert max(batches) == 3
    assert len(loaders) == 2  # a fresh loader (and workers) per epoch
    _run(tmp_path, make_config, "p", max_train_steps=None, max_train_epochs=2)
    assert len(loaders) == 3  # persistent: one for the whole run
