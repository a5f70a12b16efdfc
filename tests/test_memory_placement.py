"""Memory by construction: what sits on the device when, fp8_base's coverage, exact LoRA continuation over an fp8 or
quantized base, and previews decoded outside autocast. On a CPU-only machine the device is the CPU, so placement is
observed at the one seam that moves models (Trainer._place)."""

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from safetensors.torch import load_file, save_file
from single_files import write_flux_files

from trainer.checks.preflight import run_preflight
from trainer.config.io import validate_config
from trainer.dataset.latents import LatentCache
from trainer.dataset.te_cache import TextEncoderCache
from trainer.families.loading import ModelSources, load_components
from trainer.families.registry import fp8_components, load_family
from trainer.run.events import RunLog
from trainer.training.export import save_lora
from trainer.training.fp8 import NORM_LAYERS, store_in_fp8
from trainer.training.loop import Trainer
from trainer.training.sampling import parse_prompt_line

WEIGHTED = (torch.nn.Linear, torch.nn.Conv2d)


@pytest.fixture(autouse=True)
def bf16_state():
    """accelerate's state is one per process: these tests run in bf16 (as fp8_base needs) and leave none behind."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def make_trainer(tmp_path, config: dict, name: str = "run") -> Trainer:
    config = validate_config({**config, "mixed_precision": "bf16"})
    return Trainer(config, run_preflight(config), RunLog(tmp_path / name), Accelerator(mixed_precision="bf16"))


def test_each_component_is_on_the_device_only_for_its_job(tmp_path, make_config, tiny_flux, monkeypatch):
    """Loaded and cast to fp8 on the CPU; the VAE alone while latents are cached, the text encoders alone while
    their outputs are, then the denoiser; the VAE comes back for previews only."""
    where: dict[str, str] = {}
    seen: dict[str, dict[str, str]] = {}
    moves: list[tuple[tuple[str, ...], bool]] = []
    place = Trainer._place

    def recording_place(self, names, on_device):
        if self.model.denoiser_name in names and on_device:  # its frozen weights, not the LoRA layers'
            seen["denoiser placed in"] = {str(m.weight.dtype) for name, m in self.model.denoiser.named_modules()
                                          if type(m) is torch.nn.Linear and ".lora_" not in name}
        moves.append((tuple(names), on_device))
        where.update(dict.fromkeys(names, "device" if on_device else "cpu"))
        place(self, names, on_device)

    def snapshot(label, method):
        def run(self, *args, **kwargs):
            seen[label] = dict(where)
            return method(self, *args, **kwargs)
        return run

    monkeypatch.setattr(Trainer, "_place", recording_place)
    monkeypatch.setattr(LatentCache, "fill", snapshot("latents", LatentCache.fill))
    monkeypatch.setattr(TextEncoderCache, "fill_texts", snapshot("text", TextEncoderCache.fill_texts))
    monkeypatch.setattr(Trainer, "_forward_backward", snapshot("step", Trainer._forward_backward))
    trainer = make_trainer(tmp_path, make_config(
        pretrained_model_name_or_path=str(tiny_flux), fp8_base=True, max_train_steps=1,
        cache_text_encoder_outputs=True, sample_prompts=["red circle --w 64 --h 64 --s 1"], sample_at_first=True))
    trainer.setup()
    assert trainer.run() == "completed"
    trainer.log.close()
    encoders = ("text_encoder", "text_encoder_2")
    assert seen["latents"] == {"vae": "device"}  # nothing else has been placed yet
    assert seen["text"] == {"vae": "cpu", **dict.fromkeys(encoders, "device")}
    assert seen["denoiser placed in"] == {"torch.float8_e4m3fn"}
    for name in encoders:  # frozen, so fp8_base stores them in float8 too
        assert {m.weight.dtype for m in trainer.model.components[name].modules() if type(m) is torch.nn.Linear} == {
            torch.float8_e4m3fn}
    assert seen["step"] == {"vae": "cpu", **dict.fromkeys(encoders, "cpu"), "transformer": "device"}
    assert moves == [(("vae",), True), (("vae",), False), (encoders, True), (encoders, False),
                     (("transformer",), True), (("vae",), True), (("vae",), False)]  # the last two: the preview


def test_components_that_run_each_step_are_placed_with_the_denoiser(tmp_path, make_config, monkeypatch):
    moves = []
    monkeypatch.setattr(Trainer, "_place", lambda self, names, on_device: moves.append((tuple(names), on_device)))
    trainer = make_trainer(tmp_path, make_config(cache_latents=False))
    trainer.setup()
    trainer.log.close()
    assert moves == [(("unet", "vae", "text_encoder"), True)]


@pytest.mark.parametrize("fixture", ["tiny_flux", "tiny_sdxl"])
def test_fp8_base_stores_every_linear_and_conv_but_no_norm(request, make_config, fixture):
    config = validate_config(make_config(pretrained_model_name_or_path=str(request.getfixturevalue(fixture)),
                                         fp8_base=True, mixed_precision="bf16"))
    denoiser = load_family(config, torch.bfloat16).denoiser
    store_in_fp8(denoiser, torch.bfloat16)
    weighted = {name: m for name, m in denoiser.named_modules() if isinstance(m, WEIGHTED)}
    norms = [m for m in denoiser.modules() if isinstance(m, NORM_LAYERS)]
    assert weighted and norms
    assert {name: m.weight.dtype for name, m in weighted.items() if m.weight.dtype != torch.float8_e4m3fn} == {}
    assert not [p for m in norms for p in m.parameters() if p.dtype == torch.float8_e4m3fn]
    if fixture == "tiny_flux":  # the modulation linears diffusers' name-based default left in bf16
        assert {"transformer_blocks.0.norm1.linear", "transformer_blocks.0.norm1_context.linear",
                "single_transformer_blocks.0.norm.linear", "norm_out.linear"} <= set(weighted)
        assert any(isinstance(m, torch.nn.RMSNorm) for m in norms)  # attention's norm_q, norm_k


def test_fp8_text_encoders_compute_in_bf16(make_config, tiny_flux):
    """fp8_base stores the frozen T5 in float8, but its activations stay bf16: transformers' T5 feed-forward casts
    them to `wo`'s weight dtype, which would round them to float8 as well."""
    config = validate_config(make_config(pretrained_model_name_or_path=str(tiny_flux), fp8_base=True,
                                         mixed_precision="bf16", cache_text_encoder_outputs=True))
    t5 = load_family(config, torch.bfloat16).components["text_encoder_2"]
    ids = torch.arange(8).unsqueeze(0)
    with torch.no_grad():  # the reference: bf16 weights already rounded to float8's values
        for module in t5.modules():
            if type(module) is torch.nn.Linear:
                module.weight.copy_(module.weight.to(torch.float8_e4m3fn).to(torch.bfloat16))
        expected = t5(ids)[0]
        store_in_fp8(t5, torch.bfloat16)
        got = t5(ids)[0]
    assert {m.weight.dtype for m in t5.modules() if type(m) is torch.nn.Linear} == {torch.float8_e4m3fn}
    assert got.dtype == torch.bfloat16 and torch.equal(got, expected)


@pytest.mark.parametrize("base", [{"fp8_base": True}, {"quantize_base": "int8"}])
def test_network_weights_continue_exactly_over_an_fp8_or_quantized_base(tmp_path, make_config, base):
    first = make_trainer(tmp_path, make_config(**base), "first")
    first.setup()
    first.log.close()
    generator = torch.Generator().manual_seed(0)
    # small values, as a trained LoRA's: 3e-4 became 0.0 when loaded through fp8 adapters
    saved = {key: value if key.endswith(".alpha") else torch.randn(value.shape, generator=generator) * 3e-4
             for key, value in first.model.export_tensors(first.alpha).items()}
    save_lora(tmp_path / "start.safetensors", saved, {}, "float")
    second = make_trainer(tmp_path, make_config(network_weights=str(tmp_path / "start.safetensors"), **base),
                          "second")
    second.setup()
    second.log.close()
    exported = second.model.export_tensors(second.alpha)
    assert exported.keys() == saved.keys()
    assert [key for key in saved if not torch.equal(exported[key].float(), saved[key])] == []


def test_sdxl_previews_decode_in_float32_outside_autocast(make_config, tiny_sdxl):
    """An fp16 run samples under fp16 autocast; the VAE (kept in float32) must not decode under it."""
    model = load_family(validate_config(make_config(pretrained_model_name_or_path=str(tiny_sdxl))), torch.float32)
    model.prepare()
    decoded = []
    model.vae.decoder.register_forward_hook(lambda module, args, output: decoded.append(
        (output.dtype, torch.is_autocast_enabled("cpu"))))
    spec = parse_prompt_line("red circle --w 64 --h 64 --s 1", (64, 64))
    with torch.no_grad():
        cond, uncond = model.encode_text([spec.prompt]), model.encode_text([spec.negative])
    with torch.autocast("cpu", dtype=torch.float16):
        image = model.generate(spec, cond, uncond, 0, "euler")
    assert decoded == [(torch.float32, False)]
    assert image.shape == (64, 64, 3)


@pytest.mark.parametrize("option", ["fp8_base", "fp8_base_unet", None])
def test_fp8_files_stay_fp8_where_fp8_base_stores_fp8(tmp_path, make_config, tiny_flux, option):
    """fp8_base: the transformer and the frozen T5 keep a file's float8 weights; fp8_base_unet: the transformer
    only; neither: both are upcast."""
    files = write_flux_files(tiny_flux, tmp_path / "flux")
    for name in ("model", "t5xxl"):
        state = load_file(str(files[name]))
        save_file({k: v.to(torch.float8_e4m3fn) if v.dim() == 2 else v for k, v in state.items()}, str(files[name]))
    sources = ModelSources(str(files["model"]), vae=str(files["ae"]), clip_l=str(files["clip_l"]),
                           t5xxl=str(files["t5xxl"]), base_model_config=str(tiny_flux))
    config = validate_config(make_config(model_family="flux", mixed_precision="bf16", cache_text_encoder_outputs=True,
                                         **({option: True} if option else {})))
    components = load_components(sources, "flux", torch.bfloat16, fp8_components(config, "flux"))
    transformer, t5 = components["transformer"], components["text_encoder_2"]
    linear_dtypes = {module: {m.weight.dtype for m in module.modules() if type(m) is torch.nn.Linear}
                     for module in (transformer, t5)}
    fp8, bf16 = {torch.float8_e4m3fn}, {torch.bfloat16}
    assert linear_dtypes[transformer] == (bf16 if option is None else fp8)
    assert linear_dtypes[t5] == (fp8 if option == "fp8_base" else bf16)
    assert {p.dtype for n, p in transformer.named_parameters() if n.endswith(".bias")} == {torch.bfloat16}
