"""Single model files are recognised from their tensor names (real key conventions, tiny synthetic tensors)."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, run_cli, write_config
from safetensors.torch import save_file

from trainer.checks.preflight import readiness_problems
from trainer.families.detect import CheckpointKind, base_model_advice, describe_checkpoint, tensor_names

UNET = "model.diffusion_model."
# Only the shapes detection reads are real (the attn2.to_k context width, latent channels, text widths); the
# rest are 1-element tensors: the names are what matters.
SD1_ATTN2 = {UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [320, 768]}
SD2_ATTN2 = {UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [320, 1024]}
SD_UNET = {UNET + "input_blocks.0.0.weight": [1, 4, 1, 1], UNET + "output_blocks.11.0.skip_connection.weight": [1],
           UNET + "time_embed.0.weight": [1]}
LDM_VAE = {"first_stage_model.decoder.conv_in.weight": [1, 4, 1, 1], "first_stage_model.quant_conv.weight": [1]}
SD1_CLIP = {"cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": [1]}
SD2_CLIP = {"cond_stage_model.model.token_embedding.weight": [1], "cond_stage_model.model.positional_embedding": [1]}
SDXL_UNET = {UNET + "label_emb.0.0.weight": [1], UNET + "input_blocks.0.0.weight": [1, 4, 1, 1],
             UNET + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": [640, 2048]}
SDXL_TE = {"conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight": [1],
           "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": [1],
           "conditioner.embedders.1.model.positional_embedding": [1]}
REFINER = {UNET + "label_emb.0.0.weight": [1],
           UNET + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": [768, 1280],
           "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias": [1],
           "conditioner.embedders.0.model.text_projection": [1], **LDM_VAE}
FLUX = {"double_blocks.0.img_attn.qkv.weight": [1], "double_blocks.0.img_attn.proj.bias": [1],
        "single_blocks.0.linear1.weight": [1], "img_in.weight": [1, 64], "txt_in.weight": [1]}
FLUX_GUIDANCE = {"guidance_in.in_layer.bias": [1], "guidance_in.out_layer.weight": [1]}
SD1_LORA_TARGET = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
OLD_LORA = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora."

CASES = {
    "sd1_full": ({**SD_UNET, **SD1_ATTN2, **LDM_VAE, **SD1_CLIP},
                 CheckpointKind("model", "sd1", "SD1.x base checkpoint (UNet, VAE, CLIP-L)")),
    "sd2_full": ({**SD_UNET, **SD2_ATTN2, **LDM_VAE, **SD2_CLIP},
                 CheckpointKind("model", "sd2", "SD2.x base checkpoint (UNet, VAE, OpenCLIP-H)")),
    "sd1_inpainting": ({**SD_UNET, UNET + "input_blocks.0.0.weight": [1, 9, 1, 1], **SD1_ATTN2, **LDM_VAE,
                        **SD1_CLIP}, CheckpointKind("model", "sd1", "SD1.x inpainting checkpoint (UNet, VAE, CLIP-L)")),
    "sd2_by_text_encoder": ({**SD_UNET, **LDM_VAE, **SD2_CLIP},
                            CheckpointKind("model", "sd2", "SD2.x base checkpoint (UNet, VAE, OpenCLIP-H)")),
    "sd3_not_a_vae": ({UNET + "joint_blocks.0.context_block.adaLN_modulation.1.bias": [1],
                       "first_stage_model.decoder.conv_in.weight": [1, 16, 1, 1]},
                      CheckpointKind("unknown", None, "a checkpoint of an unrecognised model family (not SD1.x/2.x, "
                                                      "SDXL or Flux.1)")),
    "sd1_unet_only": ({**SD_UNET, **SD1_ATTN2}, CheckpointKind("unet", "sd1", "SD1.x base UNet")),
    "sdxl_full": ({**SDXL_UNET, **SDXL_TE, **LDM_VAE},
                  CheckpointKind("model", "sdxl", "SDXL base checkpoint (UNet, VAE, CLIP-L and OpenCLIP-G)")),
    "sdxl_refiner": (REFINER, CheckpointKind("model", "sdxl",
                                             "SDXL refiner checkpoint (UNet, VAE, OpenCLIP-G), not a base model")),
    "sdxl_unet_only": (SDXL_UNET, CheckpointKind("unet", "sdxl", "SDXL base UNet")),
    "sd1_diffusers_unet": ({"conv_in.weight": [1], "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight":
                            [320, 768]}, CheckpointKind("unet", "sd1", "SD1.x UNet in diffusers layout")),
    "sdxl_diffusers_unet": ({"add_embedding.linear_1.weight": [1], "down_blocks.0.resnets.0.conv1.weight": [1]},
                            CheckpointKind("unet", "sdxl", "SDXL UNet in diffusers layout")),
    "flux_dev": ({**FLUX, **FLUX_GUIDANCE},
                 CheckpointKind("transformer", "flux", "Flux.1 transformer (dev: has guidance_in)")),
    "flux_schnell_prefixed": ({UNET + k: v for k, v in FLUX.items()},
                              CheckpointKind("transformer", "flux", "Flux.1 transformer (schnell: no guidance_in)")),
    "flux_diffusers": ({"transformer_blocks.0.attn.add_k_proj.bias": [1], "single_transformer_blocks.0.attn.to_k.bias":
                        [1], "time_text_embed.guidance_embedder.linear_1.bias": [1]},
                       CheckpointKind("transformer", "flux",
                                      "Flux.1 transformer in diffusers layout (dev: has guidance_in)")),
    "flux_all_in_one": ({**{UNET + k: v for k, v in {**FLUX, **FLUX_GUIDANCE}.items()},
                         "vae.decoder.conv_in.weight": [1, 16, 1, 1],
                         "text_encoders.clip_l.transformer.text_model.final_layer_norm.weight": [768]},
                        CheckpointKind("model", "flux", "Flux.1 all-in-one checkpoint (dev: has guidance_in)")),
    "flux_ae": ({"encoder.conv_in.weight": [1], "encoder.conv_out.weight": [32, 1, 1, 1], "decoder.conv_in.weight":
                 [1, 16, 1, 1], "decoder.up.0.block.0.conv1.weight": [1]},
                CheckpointKind("vae", "flux", "Flux.1 VAE (ae, 16 latent channels)")),
    "sd_vae": ({"encoder.conv_in.weight": [1], "decoder.conv_in.weight": [1, 4, 1, 1], "quant_conv.weight": [1],
                "post_quant_conv.weight": [1]},
               CheckpointKind("vae", None, "Stable Diffusion VAE (4 latent channels, as SD1.x/2.x/SDXL use)")),
    "clip_l": ({"text_model.encoder.layers.0.self_attn.q_proj.weight": [1], "text_model.final_layer_norm.weight":
                [768]}, CheckpointKind("text_encoder", None, "CLIP-L text encoder")),
    "clip_g": ({"text_model.encoder.layers.0.self_attn.q_proj.weight": [1], "text_projection.weight": [1],
                "text_model.final_layer_norm.weight": [1280]},
               CheckpointKind("text_encoder", None, "OpenCLIP-G (clip_g) text encoder")),
    "t5xxl": ({"encoder.block.0.layer.0.SelfAttention.q.weight": [1, 4096], "shared.weight": [1],
               "encoder.final_layer_norm.weight": [1]}, CheckpointKind("text_encoder", None, "T5-XXL text encoder")),
    "kohya_lora_sd1": ({SD1_LORA_TARGET + ".lora_down.weight": [32, 768], SD1_LORA_TARGET + ".lora_up.weight": [1, 32],
                        SD1_LORA_TARGET + ".alpha": [],
                        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": [32, 1]},
                       CheckpointKind("lora", "sd1", "kohya LoRA for SD1.x, rank 32")),
    "kohya_lora_sd2": ({SD1_LORA_TARGET + ".lora_down.weight": [8, 1024], SD1_LORA_TARGET + ".alpha": []},
                       CheckpointKind("lora", "sd2", "kohya LoRA for SD2.x, rank 8")),
    "kohya_locon": ({SD1_LORA_TARGET + ".lora_down.weight": [16, 768],
                     "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": [8, 1, 3, 3],
                     "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": [16, 1, 1, 1]},
                    CheckpointKind("lora", "sd1", "kohya LoCon for SD1.x, ranks 8-16")),
    "kohya_lora_sdxl": ({"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight": [16, 1],
                         "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": [16, 1],
                         "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": [16, 1]},
                        CheckpointKind("lora", "sdxl", "kohya LoRA for SDXL, rank 16")),
    "kohya_lora_flux": ({"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": [4, 1],
                         "lora_unet_single_blocks_0_linear1.lora_down.weight": [4, 1],
                         "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": [4, 1]},
                        CheckpointKind("lora", "flux", "kohya LoRA for Flux.1, rank 4")),
    "loha": ({SD1_LORA_TARGET + ".hada_w1_a": [1, 8], SD1_LORA_TARGET + ".hada_w1_b": [8, 768],
              SD1_LORA_TARGET + ".hada_w2_a": [1, 8], SD1_LORA_TARGET + ".hada_w2_b": [8, 1],
              SD1_LORA_TARGET + ".alpha": []}, CheckpointKind("lora", "sd1", "LyCORIS LoHa for SD1.x, rank 8")),
    "lokr": ({"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lokr_w1": [4, 4],
              "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lokr_w2": [1, 1],
              "lora_te1_text_model_encoder_layers_0_mlp_fc1.lokr_w1": [4, 4]},
             CheckpointKind("lora", "sdxl", "LyCORIS LoKr for SDXL")),
    "lokr_decomposed": ({SD1_LORA_TARGET + ".lokr_w1": [4, 4], SD1_LORA_TARGET + ".lokr_w2_a": [1, 12],
                         SD1_LORA_TARGET + ".lokr_w2_b": [12, 1]},
                        CheckpointKind("lora", None, "LyCORIS LoKr, rank 12")),
    "peft_lora_sd1": ({"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": [4, 768],
                       "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight": [1, 4]},
                      CheckpointKind("lora", "sd1", "PEFT/diffusers LoRA for SD1.x, rank 4")),
    "peft_lora_flux": ({"transformer.single_transformer_blocks.0.attn.to_k.lora_A.weight": [16, 1],
                        "transformer.single_transformer_blocks.0.attn.to_k.lora_B.weight": [1, 16]},
                       CheckpointKind("lora", "flux", "PEFT/diffusers LoRA for Flux.1, rank 16")),
    "old_diffusers_lora": ({OLD_LORA + "down.weight": [4, 1], OLD_LORA + "up.weight": [1, 4]},
                           CheckpointKind("lora", None, "diffusers LoRA (old format), rank 4")),
    "embedding_sd1": ({"emb_params": [4, 768]},
                      CheckpointKind("embedding", "sd1", "textual-inversion embedding for SD1.x, 4 vectors")),
    "embedding_sdxl": ({"clip_l": [2, 768], "clip_g": [2, 1280]},
                       CheckpointKind("embedding", "sdxl", "textual-inversion embedding for SDXL, 2 vectors")),
    "unrecognised": ({"foo.bar": [1]},
                     CheckpointKind("unknown", None, "not a recognised model file (1 tensor(s), e.g. 'foo.bar')")),
}


def save_shapes(path, shapes: dict[str, list[int]]):
    save_file({name: torch.zeros(shape, dtype=torch.float16) for name, shape in shapes.items()}, str(path))
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_safetensors_files_are_recognised(tmp_path, case):
    shapes, expected = CASES[case]
    assert describe_checkpoint(save_shapes(tmp_path / f"{case}.safetensors", shapes)) == expected


def test_only_the_header_is_read_and_torch_is_not_imported(tmp_path):
    path = save_shapes(tmp_path / "m.safetensors", CASES["sdxl_full"][0])
    header_end = 8 + int.from_bytes(path.read_bytes()[:8], "little")
    path.write_bytes(path.read_bytes()[:header_end])  # drop every tensor's data: the header alone must do
    assert tensor_names(path)[UNET + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"] == [640, 2048]
    code = ("import sys; from pathlib import Path; from trainer.families.detect import describe_checkpoint; "
            f"print(describe_checkpoint(Path({str(path)!r})).family, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["sdxl", "False"]


def test_folders_and_files_are_told_apart_without_torch(tmp_path):
    configs = {"sd1": {"unet": {}, "text_encoder": {"hidden_act": "quick_gelu"}},
               "sd2": {"unet": {}, "text_encoder": {"hidden_act": "gelu"}},
               "sdxl": {"unet": {"addition_embed_type": "text_time"}, "text_encoder": {"hidden_act": "quick_gelu"}},
               "flux": {"transformer": {}, "text_encoder": {"hidden_act": "quick_gelu"}}, "none": {"vae": {}}}
    for family, parts in configs.items():
        for part, config in parts.items():
            (tmp_path / family / part).mkdir(parents=True)
            (tmp_path / family / part / "config.json").write_text(json.dumps(config), encoding="utf-8")
    sources = [*(str(tmp_path / family) for family in configs), str(save_shapes(tmp_path / "m.safetensors",
                                                                              CASES["sdxl_full"][0])), "owner/repo"]
    code = ("import sys; from trainer.families.detect import detect_family; "
            f"print(*[detect_family(s) for s in {sources!r}], 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["sd1", "sd2", "sdxl", "flux", "None", "sdxl", "None", "False"]


def test_ckpt_full_model_and_pt_embedding_load_with_weights_only(tmp_path):
    shapes = {**SD_UNET, **SD2_ATTN2, **LDM_VAE, **SD2_CLIP}
    torch.save({"state_dict": {k: torch.zeros(v) for k, v in shapes.items()}, "global_step": 10}, tmp_path / "m.ckpt")
    assert describe_checkpoint(tmp_path / "m.ckpt") == CheckpointKind(
        "model", "sd2", "SD2.x base checkpoint (UNet, VAE, OpenCLIP-H)")
    a1111 = {"string_to_token": {"*": 265}, "string_to_param": {"*": torch.zeros(3, 768)}, "name": "x", "step": 9}
    torch.save(a1111, tmp_path / "e.pt", _use_new_zipfile_serialization=False)  # legacy format: no mmap
    assert tensor_names(tmp_path / "e.pt") == {"string_to_param.*": [3, 768]}
    assert describe_checkpoint(tmp_path / "e.pt") == CheckpointKind(
        "embedding", "sd1", "textual-inversion embedding for SD1.x, 3 vectors")


class _Payload:
    """Unpickling this would run code: it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_ckpt_with_pickled_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "marker"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "extra": _Payload(marker)}, tmp_path / "evil.ckpt")
    assert not marker.exists()
    found = describe_checkpoint(tmp_path / "evil.ckpt")
    assert found == CheckpointKind("unknown", None, "not loadable safely (pickled code)")
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"hello, not a model" * 10, b"\x80\x02garbage" + bytes(range(256)),
                                     b"PK\x03\x04truncated zip"])
def test_garbage_is_not_a_model_file(tmp_path, content):
    (tmp_path / "x.safetensors").write_bytes(content)
    found = describe_checkpoint(tmp_path / "x.safetensors")
    assert found.kind == "unknown" and found.family is None and found.detail.startswith("not a model file")


def test_preflight_names_what_a_lora_or_embedding_is(tmp_path):
    lora = save_shapes(tmp_path / "my.safetensors", CASES["kohya_lora_sd1"][0])
    emb = save_shapes(tmp_path / "e.safetensors", CASES["embedding_sd1"][0])
    from trainer.config.io import validate_config

    def problem(path):
        config = validate_config({"pretrained_model_name_or_path": str(path), "train_data_dir": str(tmp_path)})
        return next(str(p) for p in readiness_problems(config) if p.keys == ("pretrained_model_name_or_path",))

    assert problem(lora) == (f"pretrained_model_name_or_path: '{lora}' is a kohya LoRA for SD1.x, rank 32, not a "
                             "base model: pick the base model you trained it on (to continue training this LoRA, "
                             "give it as network_weights)")
    assert "is a textual-inversion embedding for SD1.x, 4 vectors, not a base model" in problem(emb)


def test_check_cli_accepts_a_checkpoint_file_of_the_chosen_family(tmp_path, make_config):
    model = save_shapes(tmp_path / "sdxl.safetensors", CASES["sdxl_full"][0])
    accepted = run_cli("check", write_config(tmp_path / "a.yaml", make_config(pretrained_model_name_or_path=str(model))))
    assert accepted.returncode == 0, accepted.stderr
    refused = run_cli("check", write_config(tmp_path / "r.yaml", make_config(pretrained_model_name_or_path=str(model),
                                                                             model_family="sd1")))
    lines = [line for line in refused.stderr.splitlines() if "model_family:" in line]
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr
    assert (f"model_family: set to sd1, but '{model}' is SDXL base checkpoint (UNet, VAE, CLIP-L and OpenCLIP-G) "
            "(SDXL)") in lines[0]


def test_check_cli_asks_for_the_split_files_of_a_flux_transformer(tmp_path, make_config):
    model = save_shapes(tmp_path / "flux1-dev.safetensors", CASES["flux_dev"][0])
    result = run_cli("check", write_config(tmp_path / "c.yaml", make_config(pretrained_model_name_or_path=str(model))))
    assert result.returncode == 2 and "ae, clip_l, t5xxl: empty, but 'flux1-dev.safetensors' is a Flux.1 " \
        "transformer" in result.stderr


def test_a_file_inside_a_diffusers_folder_points_to_the_folder(tiny_sd1):
    kinds = {part: describe_checkpoint(next((tiny_sd1 / part).glob("*.safetensors"))).kind
             for part in ("unet", "vae", "text_encoder")}  # real diffusers/transformers 5 files, not synthetic
    assert kinds == {"unet": "unet", "vae": "vae", "text_encoder": "text_encoder"}
    unet_file = next((tiny_sd1 / "unet").glob("*.safetensors"))
    assert base_model_advice(unet_file) == f"is one part of the diffusers model folder '{tiny_sd1}': pick that folder"
