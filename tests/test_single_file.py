"""Single-file base models (A1111/ComfyUI checkpoints, Flux's split files, a separate VAE) load into the same
diffusers components as the tiny folders they were written from; user mistakes are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from single_files import bfl_flux, folder_config, folder_weights, ldm_vae, write_flux_files, write_ldm_checkpoint
from transformers import CLIPTokenizer

from trainer.common.errors import UserError
from trainer.families.detect import detect_family
from trainer.families.loading import SHIPPED_CONFIGS, ModelSources, load_components
from trainer.families.single_file import convert_flux_bfl
from trainer.families.table import FAMILIES
from trainer.families.tiny_sd import build_tiny_sd

SD_FIXTURES = {"sd1": "tiny_sd1", "sd2": "tiny_sd2v", "sdxl": "tiny_sdxl"}


def assert_same_weights(components: dict, folder: Path, dtype: torch.dtype = torch.float32) -> None:
    """Every component's weights equal the folder's, in `dtype` (the VAE always in float32)."""
    for name, module in components.items():
        if not hasattr(module, "state_dict"):
            continue
        want = torch.float32 if name == "vae" else dtype
        expected, loaded = folder_weights(folder, name), module.state_dict()
        assert set(expected) <= set(loaded), (name, set(expected) - set(loaded))
        different = [key for key in expected
                     if loaded[key].dtype != want or not torch.equal(expected[key].to(want), loaded[key])]
        assert not different, (name, different[:3])


@pytest.mark.parametrize("family", SD_FIXTURES)
def test_ldm_checkpoint_loads_like_its_folder(family, request, tmp_path):
    folder = request.getfixturevalue(SD_FIXTURES[family])
    checkpoint = write_ldm_checkpoint(folder, tmp_path / "model.safetensors", family)
    assert detect_family(str(checkpoint)) == detect_family(str(folder)) == family
    components = load_components(ModelSources(str(checkpoint), base_model_config=str(folder)), family,
                                 torch.float16)
    assert list(components) == list(FAMILIES[family].components)
    assert_same_weights(components, folder, torch.float16)
    folder_tokenizer = CLIPTokenizer.from_pretrained(str(folder), subfolder="tokenizer")
    assert components["tokenizer"]("a red cat").input_ids == folder_tokenizer("a red cat").input_ids
    assert type(components["scheduler"]).__name__ == "DDPMScheduler"


def test_torch_ckpt_loads_without_pickled_code(tiny_sd1, tmp_path):
    from safetensors.torch import load_file

    state = load_file(str(write_ldm_checkpoint(tiny_sd1, tmp_path / "m.safetensors", "sd1")))
    torch.save({"state_dict": state, "global_step": 1}, tmp_path / "model.ckpt")
    components = load_components(ModelSources(str(tmp_path / "model.ckpt"), base_model_config=str(tiny_sd1)), "sd1",
                                 torch.float32)
    assert_same_weights(components, tiny_sd1)


@pytest.mark.parametrize("variant, prefix", [("dev", "model.diffusion_model."), ("schnell", "")])
def test_flux_split_files_load_like_the_folder(variant, prefix, request, tmp_path):
    folder = request.getfixturevalue("tiny_flux" if variant == "dev" else "tiny_flux_schnell")
    files = write_flux_files(folder, tmp_path, prefix)
    assert detect_family(str(files["model"])) == "flux"
    sources = ModelSources(str(files["model"]), vae=str(files["ae"]), clip_l=str(files["clip_l"]),
                           t5xxl=str(files["t5xxl"]), base_model_config=str(folder))
    components = load_components(sources, "flux", torch.float32)
    assert list(components) == list(FAMILIES["flux"].components)
    assert_same_weights(components, folder)
    t5 = components["text_encoder_2"]
    assert t5.encoder.embed_tokens.weight.data_ptr() == t5.shared.weight.data_ptr()  # still tied, not copied
    assert type(components["scheduler"]).__name__ == "FlowMatchEulerDiscreteScheduler"


def test_flux_all_in_one_checkpoint_loads(tiny_flux, tmp_path):
    """ComfyUI's all-in-one Flux files keep the VAE and both text encoders under their own prefixes."""
    from safetensors.torch import load_file

    files = write_flux_files(tiny_flux, tmp_path)
    prefixes = {"model": "", "ae": "vae.", "clip_l": "text_encoders.clip_l.transformer.",
                "t5xxl": "text_encoders.t5xxl.transformer."}
    merged = {prefixes[part] + k: v for part, path in files.items() for k, v in load_file(str(path)).items()}
    save_file(merged, str(tmp_path / "flux1-dev-all-in-one.safetensors"))
    components = load_components(ModelSources(str(tmp_path / "flux1-dev-all-in-one.safetensors"),
                                              base_model_config=str(tiny_flux)), "flux", torch.float32)
    assert_same_weights(components, tiny_flux)


def test_fp8_t5_is_cast_to_the_training_dtype(tiny_flux, tmp_path):
    files = write_flux_files(tiny_flux, tmp_path)
    t5 = {k: v.to(torch.float8_e4m3fn) for k, v in folder_weights(tiny_flux, "text_encoder_2").items()}
    save_file(t5, str(tmp_path / "t5xxl_fp8_e4m3fn.safetensors"))
    sources = ModelSources(str(files["model"]), vae=str(files["ae"]), clip_l=str(files["clip_l"]),
                           t5xxl=str(tmp_path / "t5xxl_fp8_e4m3fn.safetensors"), base_model_config=str(tiny_flux))
    loaded = load_components(sources, "flux", torch.bfloat16)["text_encoder_2"].state_dict()
    assert all(loaded[k].dtype == torch.bfloat16 and torch.equal(loaded[k].float(), v.float()) for k, v in t5.items())


def test_flux_transformer_without_its_split_files_names_the_missing_key(tiny_flux, tmp_path):
    files = write_flux_files(tiny_flux, tmp_path)
    sources = ModelSources(str(files["model"]), clip_l=str(files["clip_l"]), base_model_config=str(tiny_flux))
    with pytest.raises(UserError, match=r"^ae, t5xxl: required, since .* is a Flux\.1 transformer file"):
        load_components(sources, "flux", torch.float32)


def test_our_flux_map_equals_diffusers_on_full_width_blocks(tiny_flux):
    """diffusers' converter only knows the real width (3072): compare on real-sized fused tensors (expanded
    views, no memory), with every other tensor small and distinct."""
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    names = bfl_flux(folder_weights(tiny_flux, "transformer"))
    rows = {"qkv": 3 * 3072, "linear1": 3 * 3072 + 4 * 3072}
    state = {}
    for index, name in enumerate(sorted(names)):
        kind = next((k for k in rows if f".{k}." in name), None)
        if kind is None:
            state[name] = torch.arange(4, dtype=torch.int32) + 10 * index
        else:
            column = torch.arange(rows[kind], dtype=torch.int32)[:, None] + 100_000 * index
            state[name] = column.expand(rows[kind], 2) if name.endswith("weight") else column[:, 0]
    ours = convert_flux_bfl(dict(state), 3072)
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(state))
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_separate_vae_file_replaces_the_models_vae(tiny_sd1, tmp_path):
    other = build_tiny_sd(tmp_path / "other", "sd1", seed=1)
    vae_file = tmp_path / "vae.safetensors"
    save_file({k: v.contiguous() for k, v in ldm_vae(folder_weights(other, "vae"),
                                                     folder_config(other, "vae")).items()}, str(vae_file))
    checkpoint = write_ldm_checkpoint(tiny_sd1, tmp_path / "model.safetensors", "sd1")
    for model in (str(tiny_sd1), str(checkpoint)):  # folder and single file alike
        components = load_components(ModelSources(model, vae=str(vae_file), base_model_config=str(tiny_sd1)),
                                     "sd1", torch.float32)
        assert_same_weights({"vae": components["vae"]}, other)
        assert_same_weights({"unet": components["unet"]}, tiny_sd1)
    folder_vae = load_components(ModelSources(str(checkpoint), vae=str(other / "vae"),
                                              base_model_config=str(tiny_sd1)), "sd1", torch.float32)["vae"]
    assert_same_weights({"vae": folder_vae}, other)


def test_flux_vae_given_to_sd_is_refused(tiny_sd1, tiny_flux, tmp_path):
    ae = write_flux_files(tiny_flux, tmp_path / "flux")["ae"]
    with pytest.raises(UserError, match=r"^vae: .*Flux\.1 VAE \(ae, 16 latent channels\).*4 latent channels"):
        load_components(ModelSources(str(tiny_sd1), vae=str(ae)), "sd1", torch.float32)


def test_lora_as_base_model_says_what_to_pick(tiny_sd1, tmp_path):
    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight":
               torch.zeros(4, 768), "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up"
               ".weight": torch.zeros(320, 4)}, str(lora))
    with pytest.raises(UserError, match=r"^pretrained_model_name_or_path: .* is a kohya LoRA for SD1\.x, rank 4, "
                                        r"not a base model: .*network_weights"):
        load_components(ModelSources(str(lora), base_model_config=str(tiny_sd1)), "sd1", torch.float32)


def test_vae_as_base_model_says_it_is_a_vae(tiny_sd1, tmp_path):
    vae = tmp_path / "vae.safetensors"
    save_file({k: v.contiguous() for k, v in ldm_vae(folder_weights(tiny_sd1, "vae"),
                                                     folder_config(tiny_sd1, "vae")).items()}, str(vae))
    with pytest.raises(UserError, match=r"is a Stable Diffusion VAE .* alone, not a full model") as error:
        load_components(ModelSources(str(vae)), "sd1", torch.float32)
    assert "checkpoint" in error.value.hint


def test_file_of_another_family_is_refused(tiny_sdxl, tmp_path):
    checkpoint = write_ldm_checkpoint(tiny_sdxl, tmp_path / "xl.safetensors", "sdxl")
    with pytest.raises(UserError, match=r"is an SDXL base checkpoint .*, not SD1\.x"):
        load_components(ModelSources(str(checkpoint), base_model_config=str(tiny_sdxl)), "sd1", torch.float32)


def test_missing_tokenizer_offline_names_the_repo(tiny_sd1, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty_hf_home" / "hub"))
    checkpoint = write_ldm_checkpoint(tiny_sd1, tmp_path / "model.safetensors", "sd1")
    with pytest.raises(UserError, match=r"^base_model_config: .*'openai/clip-vit-large-patch14'") as error:
        load_components(ModelSources(str(checkpoint)), "sd1", torch.float32)
    assert "connect to the internet once" in error.value.hint and "base_model_config" in error.value.hint


# Parameter counts of the real models (diffusers / transformers on the meta device, nothing allocated).
REAL_COUNTS = {
    ("sd1", "unet"): 859_520_964, ("sd1", "vae"): 83_653_863, ("sd1", "text_encoder"): 123_060_480,
    ("sd2", "unet"): 865_910_724, ("sd2", "text_encoder"): 340_387_840,
    ("sdxl", "unet"): 2_567_463_684, ("sdxl", "vae"): 83_653_863, ("sdxl", "text_encoder"): 123_060_480,
    ("sdxl", "text_encoder_2"): 694_659_840,
    ("flux-dev", "transformer"): 11_901_408_320, ("flux-schnell", "transformer"): 11_891_178_560,
    ("flux-dev", "vae"): 83_819_683, ("flux-dev", "text_encoder"): 123_060_480,
    ("flux-dev", "text_encoder_2"): 4_893_906_944,  # T5-XXL encoder: 4.76 B + the 32128 x 4096 embedding
}


@pytest.mark.parametrize("config, component", REAL_COUNTS)
def test_shipped_configs_have_the_real_parameter_counts(config, component):
    from trainer.families.single_file import empty_model

    family = "flux" if config.startswith("flux") else config
    model = empty_model(family, component, str(SHIPPED_CONFIGS / config))
    assert all(p.device.type == "meta" for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == REAL_COUNTS[(config, component)]
