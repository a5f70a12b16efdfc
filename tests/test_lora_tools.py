"""`python -m trainer lora info|resize|merge|convert` on tiny models: numbers checked against diffusers' loaders,
our own training-time (peft) model and the LoRA formulas written out here."""

import json
import math

import pytest
import safetensors
import safetensors.torch
import torch
from conftest import run_cli, write_config
from diffusers import (
    FluxPipeline,
    FluxTransformer2DModel,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.utils import logging as diffusers_logging
from lora_helpers import add_lora
from peft import get_peft_model_state_dict
from single_files import write_flux_files

from trainer.__main__ import main
from trainer.adapters.layers import ADAPTER, lora_layers
from trainer.families.detect import describe_checkpoint
from trainer.families.flux_names import FLUX_TARGETS, kohya_flux_state_dict
from trainer.families.loading import ModelSources, load_components

diffusers_logging.set_verbosity_error()
LINEAR = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
CONV = "down_blocks.0.resnets.0.conv1"  # 3x3: a LoCon module


def kohya(path: str, prefix: str = "lora_unet") -> str:
    return f"{prefix}_{path.replace('.', '_')}"


def read(path) -> tuple[dict, dict]:
    with safetensors.safe_open(str(path), "pt") as handle:
        keys = list(handle.keys())  # safe_open is no dict: iterating it does not give the keys
        return {k: handle.get_tensor(k) for k in keys}, handle.metadata() or {}


def save(path, tensors: dict, metadata: dict | None = None):
    safetensors.torch.save_file(tensors, str(path), metadata or {"ss_base_model_version": "sd_v1"})
    return path


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_sd1, train_dir):
    """A real training run's file: UNet and text encoder, 2 steps at a high learning rate."""
    root = tmp_path_factory.mktemp("trained")
    config = {"pretrained_model_name_or_path": str(tiny_sd1), "train_data_dir": str(train_dir),
              "output_dir": str(root), "output_name": "sd1", "resolution": "64", "bucket_reso_steps": 16,
              "min_bucket_reso": 64, "max_bucket_reso": 128, "train_batch_size": 2, "max_train_epochs": None,
              "max_train_steps": 2, "network_dim": 4, "network_alpha": 2, "learning_rate": 5e-2,
              "mixed_precision": "no", "save_precision": "float", "max_data_loader_n_workers": 0, "seed": 7,
              "training_comment": "tools test"}
    assert main(["train", str(write_config(root / "c.yaml", config)), "--run-dir", str(root / "run")]) == 0
    return root / "sd1.safetensors"


@pytest.fixture(scope="module")
def locon(tmp_path_factory):
    """A LoCon written directly: one linear module (rank 4) and one 3x3 conv module (rank 4), random weights."""
    gen = torch.Generator().manual_seed(0)
    tensors = {
        f"{kohya(LINEAR)}.lora_down.weight": torch.randn(4, 32, generator=gen),
        f"{kohya(LINEAR)}.lora_up.weight": torch.randn(32, 4, generator=gen),
        f"{kohya(LINEAR)}.alpha": torch.tensor(2.0),
        f"{kohya(CONV)}.lora_down.weight": torch.randn(4, 32, 3, 3, generator=gen),
        f"{kohya(CONV)}.lora_up.weight": torch.randn(32, 4, 1, 1, generator=gen),
        f"{kohya(CONV)}.alpha": torch.tensor(1.0),
    }
    meta = {"ss_base_model_version": "sd_v1", "ss_network_module": "networks.lora", "ss_network_dim": "4",
            "ss_network_alpha": "2", "ss_network_args": json.dumps({"conv_dim": "4", "conv_alpha": "1"})}
    return save(tmp_path_factory.mktemp("locon") / "locon.safetensors", tensors, meta)


def delta(tensors: dict, name: str) -> torch.Tensor:
    down, up = tensors[f"{name}.lora_down.weight"], tensors[f"{name}.lora_up.weight"]
    return (up.flatten(1) @ down.flatten(1)) * float(tensors[f"{name}.alpha"]) / down.shape[0]


# ---------------------------------------------------------------- info


def test_info_shows_family_type_rank_alpha_and_every_ss_field(trained, capsys):
    code, out, _ = cli(capsys, "lora", "info", trained)
    assert code == 0
    assert "family:        SD1.x" in out and "network type:  LoRA (networks.lora)" in out
    assert "rank:          4" in out and "alpha:         2" in out and "modules:       72" in out
    _, meta = read(trained)
    assert all(f"  {key}:" in out for key in meta if key.startswith("ss_"))
    assert '"3_square": {' in out.replace("\n ", "")  # ss_tag_frequency / dataset dirs printed as JSON
    assert f"sshs_model_hash: {meta['sshs_model_hash']}" in out
    code, out, _ = cli(capsys, "lora", "info", trained, "--json")
    info = json.loads(out)
    assert info["family"] == "sd1" and info["network_type"] == "LoRA" and info["ranks"] == {"4": 72}
    assert info["metadata"] == meta and info["modules_by_part"] == {"text encoder": 24, "unet": 48}


def test_info_of_a_locon(locon, capsys):
    info = json.loads(cli(capsys, "lora", "info", locon, "--json")[1])
    assert info["network_type"] == "LoCon" and info["ranks"] == {"4": 1} and info["conv_ranks"] == {"4": 1}
    assert info["alphas"] == {"2": 1, "1": 1}


# ---------------------------------------------------------------- resize


def test_resize_keeps_the_rank_asked_and_stays_close(locon, tmp_path, capsys):
    original, _ = read(locon)
    out = tmp_path / "r2.safetensors"
    assert cli(capsys, "lora", "resize", locon, "--rank", "2", "-o", out)[0] == 0
    resized, meta = read(out)
    for name in (kohya(LINEAR), kohya(CONV)):
        assert resized[f"{name}.lora_down.weight"].shape[0] == 2
        assert resized[f"{name}.lora_up.weight"].shape[1] == 2
        # alpha/rank stays the original's, as sd-scripts keeps it
        assert float(resized[f"{name}.alpha"]) / 2 == pytest.approx(float(original[f"{name}.alpha"]) / 4)
        before, after = delta(original, name), delta(resized, name)
        singular = torch.linalg.svdvals(before)
        tail = singular[2:].pow(2).sum().sqrt() / singular.pow(2).sum().sqrt()  # the best rank-2 error
        error = (after - before).norm() / before.norm()
        assert error <= tail + 1e-5 and error < 1
    assert meta["ss_network_dim"] == "2" and "resized from 4 to 2" in meta["ss_training_comment"]
    assert meta["ss_network_args"] == json.dumps({"conv_dim": "4", "conv_alpha": "1"})  # the rest is kept
    assert meta["sshs_model_hash"] != read(locon)[1].get("sshs_model_hash")

    exact = tmp_path / "r8.safetensors"
    assert cli(capsys, "lora", "resize", locon, "--rank", "8", "-o", exact)[0] == 0
    same, _ = read(exact)
    for name in (kohya(LINEAR), kohya(CONV)):
        assert same[f"{name}.lora_down.weight"].shape[0] == 8  # as asked (sd-scripts pads with zero values)
        assert torch.allclose(delta(same, name), delta(original, name), atol=1e-5)


@pytest.mark.parametrize("method,param", [("sv_ratio", 2.0), ("sv_fro", 0.9), ("sv_cumulative", 0.6)])
def test_dynamic_resize_chooses_each_rank_by_its_rule(locon, tmp_path, capsys, method, param):
    original, _ = read(locon)
    out = tmp_path / "dyn.safetensors"
    args = ["lora", "resize", locon, "--rank", "3", "--dynamic-method", method, "--dynamic-param", param, "-o", out]
    assert cli(capsys, *args)[0] == 0
    resized, meta = read(out)
    assert meta["ss_network_dim"] == "Dynamic"
    for name in (kohya(LINEAR), kohya(CONV)):
        s = torch.linalg.svdvals(delta(original, name))
        if method == "sv_ratio":  # keep singular values above the largest / param
            want = int((s > s[0] / param).sum())
        elif method == "sv_fro":  # the fewest values whose squares reach param^2 of the total
            want = int((torch.cumsum(s ** 2, 0) / (s ** 2).sum() < param ** 2).sum()) + 1
        else:
            want = int((torch.cumsum(s, 0) / s.sum() < param).sum()) + 1
        assert resized[f"{name}.lora_down.weight"].shape[0] == min(want, 3)


def test_dylora_is_cut_not_decomposed(tmp_path, capsys):
    gen = torch.Generator().manual_seed(3)
    down, up = torch.randn(4, 32, generator=gen), torch.randn(32, 4, generator=gen)
    name = kohya(LINEAR)
    path = save(tmp_path / "dy.safetensors",
                {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up, f"{name}.alpha": torch.tensor(4.0)},
                {"ss_network_module": "networks.dylora", "ss_network_args": json.dumps({"unit": "2"})})
    assert json.loads(cli(capsys, "lora", "info", path, "--json")[1])["network_type"] == "DyLoRA"
    out = tmp_path / "cut.safetensors"
    assert cli(capsys, "lora", "resize", path, "--rank", "2", "-o", out)[0] == 0
    cut, meta = read(out)
    assert torch.equal(cut[f"{name}.lora_down.weight"], down[:2])
    assert torch.equal(cut[f"{name}.lora_up.weight"], up[:, :2])
    # the strength DyLoRA trained rank 2 at: alpha/dim * sqrt(dim/2)
    assert float(cut[f"{name}.alpha"]) / 2 == pytest.approx(4.0 / 4 * math.sqrt(4 / 2))
    assert meta["ss_network_dim"] == "2"
    code, _, err = cli(capsys, "lora", "resize", path, "--rank", "3", "-o", tmp_path / "odd.safetensors")
    assert code == 2 and "multiple of the DyLoRA unit 2" in err


# ---------------------------------------------------------------- merge


def sd_outputs(pipe) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 100, (1, 77), generator=gen)
    with torch.no_grad():
        hidden = pipe.text_encoder(ids)[0]
        return hidden, pipe.unet(torch.randn(1, 4, 8, 8, generator=gen), 10, hidden).sample


def test_merge_equals_base_plus_lora_in_diffusers(trained, tiny_sd1, tmp_path, capsys):
    folder, single = tmp_path / "merged", tmp_path / "merged.safetensors"
    assert cli(capsys, "lora", "merge", tiny_sd1, trained, "-o", folder)[0] == 0
    assert cli(capsys, "lora", "merge", tiny_sd1, trained, "-o", single)[0] == 0
    base = StableDiffusionPipeline.from_pretrained(tiny_sd1, safety_checker=None)
    with_lora = StableDiffusionPipeline.from_pretrained(tiny_sd1, safety_checker=None)
    with_lora.load_lora_weights(str(trained))
    merged = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    want, got, before = sd_outputs(with_lora), sd_outputs(merged), sd_outputs(base)
    for w, g, b in zip(want, got, before):
        assert torch.allclose(g, w, atol=1e-4) and not torch.allclose(g, b, atol=1e-3)
    # the single file is an A1111 checkpoint (LDM keys), read back by the loader that reads users' checkpoints
    found = describe_checkpoint(single)
    assert (found.kind, found.family) == ("model", "sd1")
    assert any(k.startswith("model.diffusion_model.") for k in read(single)[0])
    components = merged_file(single, tiny_sd1, "sd1")
    for name in ("unet", "text_encoder", "vae"):
        assert_same(components[name], getattr(merged, name))


def merged_file(path, config_folder, family: str, **split_files) -> dict:
    return load_components(ModelSources(str(path), base_model_config=str(config_folder), **split_files), family,
                           torch.float32)


def assert_same(loaded, want) -> None:
    got, want = loaded.state_dict(), want.state_dict()
    assert set(want) <= set(got)
    assert all(torch.equal(got[k], v) for k, v in want.items())


def test_merge_ratio_zero_leaves_the_base_unchanged(locon, tiny_sd1, tmp_path, capsys):
    out = tmp_path / "zero.safetensors"
    assert cli(capsys, "lora", "merge", tiny_sd1, locon, "--ratio", "0", "-o", out)[0] == 0
    unet = UNet2DConditionModel.from_pretrained(tiny_sd1, subfolder="unet").state_dict()
    merged = merged_file(out, tiny_sd1, "sd1")["unet"].state_dict()
    assert all(torch.equal(merged[k], v) for k, v in unet.items())


def test_merge_of_locon_loha_lokr_follows_their_formulas(locon, tiny_sd1, tmp_path, capsys):
    gen = torch.Generator().manual_seed(5)
    w1a, w1b, w2a, w2b = (torch.randn(shape, generator=gen) * 0.1 for shape in ((32, 2), (2, 32), (32, 2), (2, 32)))
    k1, k2a, k2b = (torch.randn(shape, generator=gen) * 0.1 for shape in ((4, 4), (8, 2), (2, 72)))
    loha = {"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b, "alpha": torch.tensor(1.0)}
    lokr = {"lokr_w1": k1, "lokr_w2_a": k2a, "lokr_w2_b": k2b, "alpha": torch.tensor(1.0)}
    files = [locon, save(tmp_path / "loha.safetensors", {f"{kohya(LINEAR)}.{k}": v for k, v in loha.items()}),
             save(tmp_path / "lokr.safetensors", {f"{kohya(CONV)}.{k}": v for k, v in lokr.items()})]
    out = tmp_path / "m.safetensors"
    assert cli(capsys, "lora", "merge", tiny_sd1, *files, "--ratio", "0.5", "1", "2", "-o", out)[0] == 0
    base = UNet2DConditionModel.from_pretrained(tiny_sd1, subfolder="unet")
    merged = merged_file(out, tiny_sd1, "sd1")["unet"]
    original = read(locon)[0]
    loha_delta = (w1a @ w1b) * (w2a @ w2b) * 1.0 / 2  # alpha / rank of w1b
    want_linear = base.get_submodule(LINEAR).weight + 0.5 * delta(original, kohya(LINEAR)) + loha_delta
    lokr_delta = torch.kron(k1, k2a @ k2b).reshape(32, 32, 3, 3) * 1.0 / 2  # alpha / rank of w2b
    want_conv = base.get_submodule(CONV).weight + 0.5 * delta(original, kohya(CONV)).reshape(32, 32, 3, 3) \
        + 2 * lokr_delta
    with torch.no_grad():
        assert torch.allclose(merged.get_submodule(LINEAR).weight, want_linear, atol=1e-5)
        assert torch.allclose(merged.get_submodule(CONV).weight, want_conv, atol=1e-5)


# ---------------------------------------------------------------- convert


def test_convert_sd1_round_trip_is_exact_and_loads_in_diffusers(trained, tiny_sd1, tmp_path, capsys):
    peft_file, back = tmp_path / "d.safetensors", tmp_path / "k.safetensors"
    assert cli(capsys, "lora", "convert", trained, "--to", "diffusers", "--base", tiny_sd1, "-o", peft_file)[0] == 0
    assert cli(capsys, "lora", "convert", peft_file, "--to", "kohya", "--base", tiny_sd1, "-o", back)[0] == 0
    (original, meta), (again, meta_again) = read(trained), read(back)
    assert set(original) == set(again) and all(torch.equal(original[k], again[k]) for k in original)
    assert meta == meta_again  # ss_* kept, sshs hashes the same since the tensors are
    assert not any(k.endswith(".lora_down.weight") for k in read(peft_file)[0])
    outputs = []
    for path in (trained, peft_file):
        pipe = StableDiffusionPipeline.from_pretrained(tiny_sd1, safety_checker=None)
        pipe.load_lora_weights(str(path))
        outputs.append(sd_outputs(pipe))
    assert all(torch.equal(a, b) for a, b in zip(*outputs))


def flux_inputs(config) -> dict:
    gen = torch.Generator().manual_seed(2)
    seq, txt = 16, 8
    return {"hidden_states": torch.randn(1, seq, config.in_channels, generator=gen),
            "encoder_hidden_states": torch.randn(1, txt, config.joint_attention_dim, generator=gen),
            "pooled_projections": torch.randn(1, config.pooled_projection_dim, generator=gen),
            "timestep": torch.tensor([0.4]), "img_ids": torch.rand(seq, 3, generator=gen),
            "txt_ids": torch.zeros(txt, 3), "guidance": torch.full((1,), 3.5)}


def test_flux_convert_round_trip_and_merge(tiny_flux, tmp_path, capsys):
    model = FluxTransformer2DModel.from_pretrained(tiny_flux, subfolder="transformer").eval()
    add_lora(model, FLUX_TARGETS, 4, 2.0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B[ADAPTER].weight.copy_(torch.randn(layer.lora_B[ADAPTER].weight.shape, generator=gen) * 0.3)
        want = model(**flux_inputs(model.config)).sample
    tensors = kohya_flux_state_dict(get_peft_model_state_dict(model, adapter_name=ADAPTER), 2.0)
    original = save(tmp_path / "flux.safetensors", tensors,
                    {"ss_base_model_version": "flux1", "ss_network_module": "networks.lora_flux"})
    peft_file, back = tmp_path / "d.safetensors", tmp_path / "k.safetensors"
    assert cli(capsys, "lora", "convert", original, "--to", "diffusers", "-o", peft_file)[0] == 0
    assert cli(capsys, "lora", "convert", peft_file, "--to", "kohya", "-o", back)[0] == 0
    again = read(back)[0]
    assert set(again) == set(tensors) and all(torch.equal(again[k], tensors[k]) for k in tensors)

    pipe = FluxPipeline.from_pretrained(tiny_flux)
    pipe.load_lora_weights(str(peft_file))
    with torch.no_grad():
        assert torch.allclose(pipe.transformer(**flux_inputs(model.config)).sample, want, atol=1e-4)
    merged = tmp_path / "merged"
    assert cli(capsys, "lora", "merge", tiny_flux, original, "-o", merged)[0] == 0
    baked = FluxTransformer2DModel.from_pretrained(merged, subfolder="transformer").eval()
    with torch.no_grad():
        assert torch.allclose(baked(**flux_inputs(model.config)).sample, want, atol=1e-4)
    # -o x.safetensors: the transformer in BFL names, used with the base's ae / clip_l / t5xxl files
    single = tmp_path / "flux1-merged.safetensors"
    assert cli(capsys, "lora", "merge", tiny_flux, original, "-o", single)[0] == 0
    found = describe_checkpoint(single)
    assert (found.kind, found.family) == ("transformer", "flux")
    files = write_flux_files(tiny_flux, tmp_path / "base")
    components = merged_file(single, tiny_flux, "flux", vae=str(files["ae"]), clip_l=str(files["clip_l"]),
                             t5xxl=str(files["t5xxl"]))
    folder = FluxPipeline.from_pretrained(merged)
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        assert_same(components[name], getattr(folder, name))


def test_flux_single_file_refuses_a_merged_text_encoder(tiny_flux, tmp_path, capsys):
    """CLIP-L changes would be lost in a transformer-only file: refused with a hint to the folder format."""
    layer = "text_encoder.text_model.encoder.layers.0.self_attn.q_proj"
    width = FluxPipeline.from_pretrained(tiny_flux).text_encoder.config.hidden_size
    peft = save(tmp_path / "te.safetensors", {f"{layer}.lora_A.weight": torch.ones(2, width),
                                              f"{layer}.lora_B.weight": torch.ones(width, 2)},
                {"ss_base_model_version": "flux1"})
    code, _, err = cli(capsys, "lora", "merge", tiny_flux, peft, "-o", tmp_path / "m.safetensors")
    assert code == 2 and "text_encoder" in err and "--format diffusers" in err
    assert not (tmp_path / "m.safetensors").exists()
    assert cli(capsys, "lora", "merge", tiny_flux, peft, "-o", tmp_path / "folder")[0] == 0


# ---------------------------------------------------------------- errors


def test_errors_are_one_line_with_a_hint(locon, tiny_sd1, tmp_path, capsys):
    result = run_cli("lora", "info", tmp_path / "missing.safetensors")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "does not exist" in result.stderr and "hint:" in result.stderr
    code, _, err = cli(capsys, "lora", "info", tiny_sd1 / "unet" / "diffusion_pytorch_model.safetensors")
    assert code == 2 and "is not a LoRA file" in err
    loha = save(tmp_path / "loha.safetensors", {f"{kohya(LINEAR)}.{k}": torch.ones(2, 2) for k in
                                                 ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")})
    code, _, err = cli(capsys, "lora", "resize", loha, "--rank", "1", "-o", tmp_path / "x.safetensors")
    assert code == 2 and "this is a LoHa" in err
    code, _, err = cli(capsys, "lora", "resize", locon, "--rank", "2", "-o", locon)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    stray = save(tmp_path / "stray.safetensors", {"lora_unet_no_such_layer.lora_down.weight": torch.ones(2, 4),
                                                  "lora_unet_no_such_layer.lora_up.weight": torch.ones(4, 2)})
    code, _, err = cli(capsys, "lora", "merge", tiny_sd1, stray, "-o", tmp_path / "m.safetensors")
    assert code == 2 and "1 of 1 module(s) name no layer" in err and "lora_unet_no_such_layer" in err


def test_overwrite_replaces_only_what_danlu_wrote(locon, tiny_sd1, tmp_path, capsys):
    """--overwrite never deletes a folder Danlu did not write (a dataset was wiped once); its own merged model
    folder is replaced, and a LoRA file name that is a folder is refused."""
    dataset = tmp_path / "10_cat"
    dataset.mkdir()
    (dataset / "a.png").write_bytes(b"image")
    code, _, err = cli(capsys, "lora", "merge", tiny_sd1, locon, "-o", dataset, "--overwrite")
    assert code == 2 and str(dataset) in err and "did not write" in err
    assert (dataset / "a.png").read_bytes() == b"image"
    folder = tmp_path / "merged"
    assert cli(capsys, "lora", "merge", tiny_sd1, locon, "-o", folder)[0] == 0
    assert cli(capsys, "lora", "merge", tiny_sd1, locon, "--ratio", "0", "-o", folder, "--overwrite")[0] == 0
    assert (folder / "model_index.json").is_file() and not list(tmp_path.glob(".merged.*"))
    named_like_a_file = tmp_path / "x.safetensors"
    named_like_a_file.mkdir()
    code, _, err = cli(capsys, "lora", "resize", locon, "--rank", "2", "-o", named_like_a_file, "--overwrite")
    assert code == 2 and "is a folder" in err and named_like_a_file.is_dir()
