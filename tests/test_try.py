"""`python -m trainer try` on tiny models: Danlu's own weight patching against the independent loaders (diffusers'
load_lora_weights for kohya LoRA files, the LyCORIS library for LoHa and LoKr), strength 0 as the base model bit
for bit, effect sizes that rise with strength, seed spread over two seeds, reruns with the same pixels, a stop."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import safetensors.torch
import torch
from conftest import write_config
from PIL import Image

from tests.test_families import train_in_process
from trainer.__main__ import main
from trainer.training.sampling import SamplePrompt
from trainer.try_lora.client import TryServer
from trainer.try_lora.grid import GridSpec, lora_choice
from trainer.try_lora.picture import read_settings
from trainer.try_lora.render import render_grid
from trainer.try_lora.serve import KeptModel, serve
from trainer.try_lora.session import TrySession, sampling_config
from ui.try_tab import grid_process_alive

PROMPT = SamplePrompt("red circle, on white background", width=64, height=64, steps=4)
PROMPT_LINE = "red circle, on white background --w 64 --h 64 --s 4"
SAMPLER = "euler"


def _train_run(root, config: dict) -> tuple:
    """A real training (in this process): the run folder and its final LoRA file."""
    assert main(["train", str(write_config(root / "c.yaml", config)), "--run-dir", str(root / "run")]) == 0
    return root / "run", root / "out" / "test.safetensors"


@pytest.fixture(scope="module")
def sd1_run(tmp_path_factory, tiny_sd1, train_dir):
    """2 steps at a high learning rate: UNet and text encoder, a file whose effect is plain to see."""
    root = tmp_path_factory.mktemp("try_sd1")
    config = {"pretrained_model_name_or_path": str(tiny_sd1), "train_data_dir": str(train_dir),
              "output_dir": str(root / "out"), "output_name": "test", "resolution": "64", "bucket_reso_steps": 16,
              "min_bucket_reso": 64, "max_bucket_reso": 128, "train_batch_size": 2, "max_train_epochs": None,
              "max_train_steps": 2, "network_dim": 4, "network_alpha": 2, "learning_rate": 5e-2,
              "mixed_precision": "no", "save_precision": "float", "max_data_loader_n_workers": 0, "seed": 7,
              "sample_prompts": [PROMPT_LINE, "一个红色的圆 --w 64 --h 64 --s 4"]}
    return _train_run(root, config)


@pytest.fixture(scope="module")
def sd1_session(tiny_sd1):
    return TrySession(sampling_config(str(tiny_sd1), None))


def _reference(base: str) -> TrySession:
    """A second copy of the model, for a loader other than Danlu's to change."""
    return TrySession(sampling_config(base, None))


def _close(got: np.ndarray, want: np.ndarray, base: np.ndarray) -> None:
    """Equal to the independent loader's picture up to float rounding, and plainly not the base model's."""
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.05, (diff.max(), diff.mean())
    assert np.abs(got.astype(int) - base.astype(int)).max() > 10


def test_strength_zero_is_the_base_and_one_equals_diffusers_sd1(sd1_run, sd1_session, tiny_sd1):
    _, lora = sd1_run
    session = sd1_session
    session.use(None)
    base = session.render(PROMPT, 3, SAMPLER)
    session.use(str(lora), 1.0)
    ours = session.render(PROMPT, 3, SAMPLER)
    session.use(str(lora), 0.0)  # the patched layers restored bit for bit
    assert np.array_equal(session.render(PROMPT, 3, SAMPLER), base)
    assert all(torch.equal(layer.weight.cpu(), weight) for layer, weight in session.originals.items())
    reference = _reference(str(tiny_sd1))
    pipe = type(reference.model).assemble(reference.model.components)
    pipe.load_lora_weights(str(lora))  # peft layers in the same UNet and text encoder
    _close(ours, reference.render(PROMPT, 3, SAMPLER), base)


def test_strength_one_equals_diffusers_sdxl(tmp_path, make_config, tiny_sdxl):
    config = make_config(pretrained_model_name_or_path=str(tiny_sdxl), learning_rate=5e-2, max_train_steps=2,
                         network_train_unet_only=False)
    train_in_process(tmp_path, config)
    lora = tmp_path / "out" / "test.safetensors"
    session = TrySession(sampling_config(str(tiny_sdxl), None))
    base = session.render(PROMPT, 5, SAMPLER)
    session.use(str(lora), 1.0)
    ours = session.render(PROMPT, 5, SAMPLER)
    session.use(None)
    assert np.array_equal(session.render(PROMPT, 5, SAMPLER), base)
    reference = _reference(str(tiny_sdxl))
    type(reference.model).assemble(reference.model.components).load_lora_weights(str(lora))
    _close(ours, reference.render(PROMPT, 5, SAMPLER), base)


class _TransformersFourPaths(torch.nn.Module):
    """LyCORIS's loader names the text encoder by transformers 4's text_model.* paths."""

    def __init__(self, text_encoder):
        super().__init__()
        self.text_model = text_encoder


@pytest.mark.parametrize("network_type", ["loha", "lokr"])
def test_loha_and_lokr_equal_the_lycoris_library(tmp_path, monkeypatch, make_config, tiny_sd1, sd1_session,
                                                 network_type):
    from lycoris.kohya import LycorisNetworkKohya, create_network_from_weights

    monkeypatch.setattr(LycorisNetworkKohya, "UNET_TARGET_REPLACE_NAME", [])  # as tests/test_network_types.py
    config = make_config(network_type=network_type, network_dim=4, network_alpha=1.5, conv_dim=2,
                         learning_rate=5e-2, max_train_steps=2)
    train_in_process(tmp_path, config)
    lora = tmp_path / "out" / "test.safetensors"
    session = sd1_session
    session.use(None)
    base = session.render(PROMPT, 4, SAMPLER)
    session.use(str(lora), 1.0)
    ours = session.render(PROMPT, 4, SAMPLER)
    reference = _reference(str(tiny_sd1))
    components = reference.model.components
    wrapped = _TransformersFourPaths(components["text_encoder"])
    tensors = safetensors.torch.load_file(str(lora))
    network, _ = create_network_from_weights(1.0, None, None, wrapped, components["unet"], weights_sd=tensors)
    assert len(network.unet_loras) + len(network.text_encoder_loras) == len({k.split(".")[0] for k in tensors})
    network.apply_to(wrapped, components["unet"], apply_text_encoder=True, apply_unet=True)
    _close(ours, reference.render(PROMPT, 4, SAMPLER), base)
    session.use(None)


def test_effect_rises_with_strength_and_a_rerun_gives_the_same_pixels(sd1_run, tmp_path, capsys):
    run, lora = sd1_run
    first, again = tmp_path / "first", tmp_path / "again"
    args = ["try", "--run", run, "--strengths", "0,0.5,1", "--seeds", "1,2", "--prompts", PROMPT_LINE,
            "--sampler", SAMPLER, "--rows", "strength", "--cols", "seed", "--out", first, "--json"]
    assert main([str(arg) for arg in args]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    record = json.loads((first / "grid.json").read_text(encoding="utf-8"))
    assert printed["status"] == record["status"] == "completed" and len(record["cells"]) == 6
    assert record["rows"] == [["strength 0"], ["strength 0.5"], ["strength 1"]]
    assert record["cols"] == [["seed 1"], ["seed 2"]]
    rows = {row["strength"]: row for row in record["summary"]}
    assert rows[0.0]["effect"] == rows[0.0]["effect_max"] == 0.0
    assert 0 < rows[0.5]["effect"] < rows[1.0]["effect"]
    for row in rows.values():  # consistency over the two seeds, beside the base model's
        assert row["seed_spread"] > 0 and row["base_seed_spread"] > 0 and row["broken"] == {}
    assert rows[0.0]["seed_spread"] == rows[0.0]["base_seed_spread"]
    assert read_settings(first / "grid.png") == record["settings"]
    events = [json.loads(line) for line in (first / "progress.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [e["type"] for e in events].count("cell") == 6 and events[-1]["status"] == "completed"
    assert [e["type"] for e in events[:2]] == ["started", "plan"]
    assert main(["try", "--again", str(first / "grid.json"), "--out", str(again)]) == 0
    assert np.array_equal(np.asarray(Image.open(first / "grid.png")), np.asarray(Image.open(again / "grid.png")))
    assert json.loads((again / "grid.json").read_text(encoding="utf-8"))["summary"] == record["summary"]


def test_a_stop_keeps_the_cells_done(sd1_run, sd1_session, tiny_sd1, tmp_path):
    _, lora = sd1_run
    spec = GridSpec(str(tiny_sd1), [lora_choice(lora)], strengths=[0.0, 1.0], seeds=[1, 2], prompts=[PROMPT_LINE],
                    sampler=SAMPLER)
    asked = iter([False] * 4 + [True] * 10)  # 2 base pictures, 2 strength-0 cells, then the stop
    record = render_grid(spec, tmp_path / "grid", lambda: next(asked), lambda line: None,
                         lambda _spec: sd1_session)
    assert record["status"] == "stopped" and len(record["cells"]) == 2
    assert (tmp_path / "grid" / "grid.png").is_file()
    assert all(cell["strength"] == 0 and cell["effect"] == 0 for cell in record["cells"])


def test_the_server_keeps_the_model_between_grids_and_serves_on_after_a_refusal(sd1_run, tmp_path, monkeypatch):
    from trainer.try_lora import session as session_module

    loads = []
    monkeypatch.setattr(session_module, "TrySession", type("Counted", (TrySession,), {
        "__init__": lambda self, *a, **k: (loads.append(1), TrySession.__init__(self, *a, **k))[1]}))
    run, lora = sd1_run
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(lora.read_bytes())
    grid = ["--run", str(run), "--lora", str(mine), "--strengths", "1", "--seeds", "1", "--prompts", PROMPT_LINE,
            "--sampler", SAMPLER]
    requests = [{"args": grid, "out": str(tmp_path / "a")},
                {"args": ["--run", str(run), "--lora", str(tmp_path / "gone.safetensors")], "out": str(tmp_path / "b")},
                {"args": grid, "out": str(tmp_path / "c")}]
    kept = KeptModel()
    serve([json.dumps(request) for request in requests], kept)

    def events(name: str) -> list[dict]:
        return [json.loads(line) for line in (tmp_path / name / "progress.jsonl").read_text("utf-8").splitlines()]

    assert [e.get("model_kept") for e in events("a") + events("c") if e["type"] == "plan"] == [False, True]
    assert len(loads) == 1 and kept.session is None  # loaded once; let go when the requests ended
    refused = events("b")
    assert [e["type"] for e in refused] == ["error", "finished"] and "gone.safetensors" in refused[0]["message"]
    assert "gone.safetensors" in (tmp_path / "b" / "console.log").read_text("utf-8")
    first = next(e for e in events("c") if e["type"] == "cell")["effect"]
    tensors = safetensors.torch.load_file(mine)  # the file saved anew (a training wrote it again): read again
    safetensors.torch.save_file({k: v * 2 if "lora_up" in k else v for k, v in tensors.items()}, mine)
    serve([json.dumps({"args": grid, "out": str(tmp_path / "d")})], kept)
    assert next(e for e in events("d") if e["type"] == "cell")["effect"] > first * 1.2


def test_the_guis_server_child_renders_what_it_is_given_and_ends_when_idle(tmp_path):
    server = TryServer(tmp_path / "server.log", keep_s=0.5, check_s=0.2)
    folder = tmp_path / "grid"
    folder.mkdir()
    server.submit(["--base", str(tmp_path / "model")], folder)  # no --lora: refused in the child
    assert grid_process_alive(str(folder))  # as the Try tab asks: the process its process.json names
    deadline = time.monotonic() + 240
    while grid_process_alive(str(folder)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not grid_process_alive(str(folder))  # released once its grid had ended and it stayed idle
    events = [json.loads(line) for line in (folder / "progress.jsonl").read_text("utf-8").splitlines()]
    assert events[-1] == {**events[-1], "type": "finished", "status": "failed"} and "--lora" in events[0]["message"]


def test_flux_kohya_lora_equals_diffusers_and_zero_is_the_base(tiny_flux, tmp_path):
    from diffusers import FluxTransformer2DModel
    from lora_helpers import add_lora
    from peft import get_peft_model_state_dict

    from trainer.adapters.layers import ADAPTER, lora_layers
    from trainer.families.flux_names import FLUX_TARGETS, kohya_flux_state_dict

    model = FluxTransformer2DModel.from_pretrained(tiny_flux, subfolder="transformer")
    add_lora(model, FLUX_TARGETS, 4, 2.0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B[ADAPTER].weight.copy_(torch.randn(layer.lora_B[ADAPTER].weight.shape, generator=gen))
    tensors = kohya_flux_state_dict(get_peft_model_state_dict(model, adapter_name=ADAPTER), 2.0)
    lora = tmp_path / "flux.safetensors"  # the fused q/k/v names of the original model, as sd-scripts writes
    safetensors.torch.save_file(tensors, str(lora), {"ss_base_model_version": "flux1",
                                                     "ss_network_module": "networks.lora_flux"})
    session = TrySession(sampling_config(str(tiny_flux), None))
    base = session.render(PROMPT, 2, SAMPLER)
    session.use(str(lora), 1.0)
    ours = session.render(PROMPT, 2, SAMPLER)
    session.use(str(lora), 0.0)
    assert np.array_equal(session.render(PROMPT, 2, SAMPLER), base)
    # diffusers' own kohya-Flux reader assumes the full-size model's widths: it reads the file in its own layout
    peft_file = tmp_path / "flux-diffusers.safetensors"
    assert main(["lora", "convert", str(lora), "--to", "diffusers", "-o", str(peft_file)]) == 0
    reference = _reference(str(tiny_flux))
    type(reference.model).assemble(reference.model.components).load_lora_weights(str(peft_file))
    _close(ours, reference.render(PROMPT, 2, SAMPLER), base)
