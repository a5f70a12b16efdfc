"""Network types: LoRA/LoCon reload in diffusers, LoHa/LoKr in the LyCORIS library, DyLoRA trains every rank,
sd-scripts' network_module/network_args forms map onto network_type, and a type is one module of its own."""

import ast
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch
from conftest import REPO, write_config
from diffusers import DiffusionPipeline
from lora_helpers import add_lora

from tests.test_families import train_in_process
from tests.test_train_cli import _generate, _pipeline
from trainer.adapters.dylora import add_dylora
from trainer.adapters.layers import ADAPTER, lora_layers
from trainer.adapters.types import NETWORK_TYPES
from trainer.common.errors import UserError
from trainer.config.io import validate_config
from trainer.families.registry import load_family


def _train(tmp_path, make_config, **overrides):
    config = make_config(**{"network_dim": 4, "network_alpha": 1.5, "learning_rate": 5e-2, "max_train_steps": 3,
                            **overrides})
    trainer = train_in_process(tmp_path, config)
    path = tmp_path / "out" / "test.safetensors"
    with safetensors.safe_open(str(path), "pt") as handle:
        return trainer, safetensors.torch.load_file(str(path)), handle.metadata()


@pytest.mark.parametrize("network_type, variant", [("lora", "sd1"), ("locon", "sd1"), ("locon", "sdxl")])
def test_lora_and_locon_reload_in_diffusers(tmp_path, request, make_config, network_type, variant):
    """SDXL's LoCon keys use the original block numbering (input_blocks.N.0.in_layers.2, ...), read back by diffusers."""
    model_path = request.getfixturevalue(f"tiny_{variant}")
    extra = {"conv_dim": 2, "conv_alpha": 0.5} if network_type == "locon" else {}
    trainer, tensors, meta = _train(tmp_path, make_config, network_type=network_type,
                                    pretrained_model_name_or_path=str(model_path), **extra)
    convs = {key: value for key, value in tensors.items() if key.endswith("lora_down.weight") and value.dim() == 4
             and value.shape[-1] == 3}
    if network_type == "locon":
        assert convs and all(value.shape[0] == 2 for value in convs.values())  # conv layers at conv_dim
        assert float(tensors[next(iter(convs)).replace("lora_down.weight", "alpha")]) == 0.5
        first_conv = "down_blocks_0_resnets_0_conv1" if variant == "sd1" else "input_blocks_1_0_in_layers_2"
        assert f"lora_unet_{first_conv}.lora_down.weight" in tensors
        assert variant == "sd1" or not any("resnets" in key or "samplers" in key for key in tensors)
        assert any(re.search("downsamplers_0_conv|_0_op", key) for key in tensors)
        assert meta["ss_network_module"] == "networks.lora"
        assert json.loads(meta["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "0.5"}
    else:
        assert not convs and "ss_network_args" not in meta
    trained = _pipeline(trainer.model)
    loaded = DiffusionPipeline.from_pretrained(model_path, safety_checker=None)
    before = _generate(loaded)
    loaded.load_lora_weights(str(tmp_path / "out" / "test.safetensors"))
    expected, actual = _generate(trained), _generate(loaded)
    assert np.abs(expected - before).max() > 1e-3
    assert np.abs(expected - actual).max() <= 1e-4


class _TransformersFourPaths(torch.nn.Module):
    """kohya names (and LyCORIS's loader) use transformers 4's text_model.* paths, which transformers 5 dropped."""

    def __init__(self, text_encoder):
        super().__init__()
        self.text_model = text_encoder


@pytest.mark.parametrize("network_type, extra", [
    ("loha", {}), ("lokr", {}), ("lokr", {"factor": 4}),
    ("lokr", {"network_dim": 100000, "conv_dim": 10000, "learning_rate": 1e-3}),  # full matrices, as LyCORIS
])
def test_loha_and_lokr_load_in_lycoris(tmp_path, monkeypatch, make_config, tiny_sd1, network_type, extra):
    from lycoris.kohya import LycorisNetworkKohya, create_network_from_weights

    # LyCORIS 4.1.3 builds a default network first, and with a diffusers UNet it names time_embedding twice
    # (by module class and by name); the modules loaded from the file replace that network anyway.
    monkeypatch.setattr(LycorisNetworkKohya, "UNET_TARGET_REPLACE_NAME", [])

    trainer, tensors, meta = _train(tmp_path, make_config, network_type=network_type, **{"conv_dim": 2, **extra})
    prefix = "hada_w1_a" if network_type == "loha" else "lokr_w1"
    assert any(key.endswith(prefix) for key in tensors) and not any("lora_down" in key for key in tensors)
    if extra.get("network_dim", 0) >= 10000:  # every layer two full matrices, saved with alpha = rank (scale 1)
        assert not any(key.endswith(("_a", "_b")) for key in tensors)
        assert {float(value) for key, value in tensors.items() if key.endswith(".alpha")} == {100000.0, 10000.0}
    assert any(key.startswith("lora_unet_down_blocks_0_resnets_0_conv1.") for key in tensors)
    assert meta["ss_network_module"] == "lycoris.kohya" and json.loads(meta["ss_network_args"])["algo"] == network_type
    trained = _pipeline(trainer.model)
    loaded = DiffusionPipeline.from_pretrained(tiny_sd1, safety_checker=None)
    before = _generate(loaded)
    wrapped = _TransformersFourPaths(loaded.text_encoder)
    network, weights = create_network_from_weights(1.0, None, None, wrapped, loaded.unet, weights_sd=tensors)
    assert len(network.unet_loras) + len(network.text_encoder_loras) == len({k.split(".")[0] for k in tensors})
    network.apply_to(wrapped, loaded.unet, apply_text_encoder=True, apply_unet=True)
    expected, actual = _generate(trained), _generate(loaded)
    assert np.abs(expected - before).max() > 1e-3
    assert np.abs(expected - actual).max() <= 1e-4


@pytest.mark.parametrize("network_type", ["loha", "lokr"])
def test_lycoris_training_continues_from_its_own_file(tmp_path, make_config, network_type):
    """network_weights loads a LoHa/LoKr file back exactly; a file of another type is refused."""
    from accelerate import Accelerator

    from trainer.checks.preflight import run_preflight
    from trainer.run.events import RunLog
    from trainer.training.loop import Trainer

    _, first, _ = _train(tmp_path, make_config, network_type=network_type)
    config = validate_config(make_config(network_type=network_type, network_dim=4, network_alpha=1.5,
                                         network_weights=str(tmp_path / "out" / "test.safetensors"), output_name="again"))
    trainer = Trainer(config, run_preflight(config), RunLog(tmp_path / "run2"), Accelerator(mixed_precision="no"))
    trainer.setup()
    again = trainer.model.export_tensors(trainer.alpha)
    assert set(again) == set(first)
    assert all(torch.allclose(again[key], first[key], atol=1e-7) for key in first)
    trainer.log.close()
    other = validate_config(make_config(network_weights=str(tmp_path / "out" / "test.safetensors"), output_name="again"))
    with pytest.raises(UserError, match="network_weights: no key of"):
        Trainer(other, run_preflight(other), RunLog(tmp_path / "run3"), Accelerator(mixed_precision="no")).setup()


def test_dylora_forward_uses_a_random_prefix_of_the_ranks():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    add_lora(model, ["0"], dim=4, alpha=4)
    layer = lora_layers(model)["0"]
    torch.nn.init.normal_(layer.lora_B[ADAPTER].weight)
    add_dylora(model, unit=2)
    x = torch.randn(3, 8)
    down, up = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
    base = layer.base_layer(x)
    ranks = set()
    model.train()
    for _ in range(12):
        out = model(x)
        rank = layer.dylora_state["rank"]
        ranks.add(rank)
        expected = base + x @ down[:rank].T @ up[:, :rank].T * (4 / rank) ** 0.5
        assert torch.allclose(out, expected, atol=1e-5)
    assert ranks == {2, 4}
    # only the newest unit of ranks learns: rows below it in lora_down take no gradient
    while True:
        out = model(x)
        if layer.dylora_state["rank"] == 4:
            break
    out.sum().backward()
    assert down.grad[:2].abs().sum() == 0 and down.grad[2:].abs().sum() > 0
    assert up.grad[:, :2].abs().sum() == 0 and up.grad[:, 2:].abs().sum() > 0
    model.eval()
    assert torch.allclose(model(x), base + x @ down.T @ up.T, atol=1e-5)


def test_dylora_saves_a_full_rank_kohya_file(tmp_path, make_config):
    _, tensors, meta = _train(tmp_path, make_config, network_module="networks.dylora", network_args=["unit=2"])
    downs = [value for key, value in tensors.items() if key.endswith("lora_down.weight")]
    assert downs and all(value.shape[0] == 4 for value in downs)
    assert meta["ss_network_module"] == "networks.dylora" and json.loads(meta["ss_network_args"]) == {"unit": "2"}


def test_sd_scripts_forms_map_onto_network_type(make_config):
    config = validate_config(make_config(network_module="lycoris.kohya", network_args=["algo=loha", "conv_dim=4"]))
    assert (config.network_type, config.conv_dim, config.network_args) == ("loha", 4, None)
    config = validate_config(make_config(network_args=["conv_dim=4"]))
    assert (config.network_type, config.conv_dim, config.conv_alpha) == ("locon", 4, 1.0)  # kohya's C3Lier
    config = validate_config(make_config(network_module="lycoris.kohya", network_args=["algo=lokr", "factor=8"]))
    assert (config.network_type, config.factor) == ("lokr", 8)
    assert validate_config(make_config(network_module="networks.dylora")).network_type == "dylora"
    assert validate_config(make_config(network_type="loha")).network_module == "lycoris.kohya"


@pytest.mark.parametrize("overrides, words", [
    ({"network_module": "lycoris.kohya", "network_args": ["algo=glora"]}, "network_args: algo=glora is not supported"),
    ({"network_args": ["block_dims=2"]}, "network_args: 'block_dims' is not supported"),
    ({"network_type": "loha", "network_module": "networks.dylora"}, "network_type: loha contradicts network_module"),
    ({"factor": 4}, "factor is for network_type lokr"),
    ({"network_type": "dylora", "unit": 3}, "unit: network_dim 4 must be a multiple of unit 3"),
    ({"conv_dim": 4}, "conv_dim / conv_alpha: network_type lora has no conv layers"),
    ({"network_type": "loha", "scale_weight_norms": 1.0}, "scale_weight_norms: not available for loha"),
])
def test_unsupported_network_forms_are_clear_errors(make_config, overrides, words):
    with pytest.raises(Exception, match=re.escape(words)):
        validate_config(make_config(**overrides))


def test_flux_refuses_lycoris_types(make_config, tiny_flux):
    config = validate_config(make_config(pretrained_model_name_or_path=str(tiny_flux), network_type="loha"))
    with pytest.raises(UserError, match=re.escape("network_type: Flux.1 trains lora only")):
        load_family(config, torch.float32)


# A throwaway network type, written the way the real ones are (torch-free data, torch in its methods): a LoRA that
# counts its layers after injection and saves the count. Its last line is what trainer/adapters/types.py would hold.
TAGGED_TYPE = """
from dataclasses import dataclass

from trainer.adapters.lora import LoraType
from trainer.adapters.types import NETWORK_TYPES


@dataclass(frozen=True)
class Tagged(LoraType):
    def after_injection(self, module, config):
        from trainer.adapters.layers import lora_layers

        super().after_injection(module, config)
        module.tagged = len(lora_layers(module))

    def state_dict(self, module, prefix, rename):
        import torch

        return {**super().state_dict(module, prefix, rename), f"{prefix}.tagged": torch.tensor(float(module.tagged))}


NETWORK_TYPES["tagged"] = Tagged("tagged", "Tagged", "networks.lora")
"""
TRAIN = ("import runpy, sys, tagged; sys.argv = ['trainer', 'train', sys.argv[1]]; "
         "runpy.run_module('trainer', run_name='__main__')")


def test_a_network_type_is_one_module(tmp_path, make_config):
    """Registered from a module of its own, a type is accepted by the schema, injected with its own hook by the
    loop and saved by its own state_dict: no other file names it."""
    (tmp_path / "tagged.py").write_text(TAGGED_TYPE, encoding="utf-8")
    config = write_config(tmp_path / "c.yaml", make_config(network_type="tagged", max_train_steps=1))
    result = subprocess.run([sys.executable, "-c", TRAIN, str(config)], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])})
    assert result.returncode == 0, result.stderr[-2000:]
    with safetensors.safe_open(str(tmp_path / "out" / "test.safetensors"), "pt") as handle:
        tensors, meta = {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata()
    unet_layers = sum(key.startswith("lora_unet_") and key.endswith(".lora_down.weight") for key in tensors)
    assert unet_layers and float(tensors["lora_unet.tagged"]) == unet_layers
    assert "lora_te.tagged" in tensors and meta["ss_network_module"] == "networks.lora"


def _names_a_type(node: ast.AST, names: set[str]) -> bool:
    """A string that is a type's name, or a tuple/list/set of such strings."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return bool(node.elts) and all(_names_a_type(elt, names) for elt in node.elts)
    return isinstance(node, ast.Constant) and node.value in names


def test_no_code_outside_the_adapters_branches_on_a_network_type():
    """Comparisons with a type's name and lists of names live in trainer/adapters/ only. "lora" is also a file
    kind and a CLI verb: it counts where a comparison reads a network_type."""
    names, found = set(NETWORK_TYPES), []
    for path in sorted([*(REPO / "trainer").rglob("*.py"), *(REPO / "ui").rglob("*.py")]):
        if path.parent.name == "adapters":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                named = names if "network_type" in ast.unparse(node) else names - {"lora"}
                hit = any(_names_a_type(operand, named) for operand in [node.left, *node.comparators])
            else:
                hit = isinstance(node, (ast.Tuple, ast.List, ast.Set)) and _names_a_type(node, names - {"lora"})
            if hit:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert not found
