"""LoRA files: kohya keys, hashes, precision and formats, atomic replacement under SIGKILL."""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from conftest import REPO

from trainer.training.export import load_lora, model_hashes, save_lora


def _tensors(version: int, size: int = 64) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(version)
    return {f"lora_unet_block_{i}.lora_down.weight": torch.randn(size, size, generator=generator)
            for i in range(4)}


def test_model_hash_is_sha256_of_the_tensor_data(tmp_path):
    path = tmp_path / "a.safetensors"
    save_lora(path, _tensors(1), {"ss_network_dim": "4"}, "float")
    data = path.read_bytes()
    header = int.from_bytes(data[:8], "little")
    _, meta = load_lora(path)
    assert meta["sshs_model_hash"] == hashlib.sha256(data[8 + header:]).hexdigest()
    assert meta["ss_network_dim"] == "4"
    assert model_hashes(_tensors(2), {})[0] != meta["sshs_model_hash"]


@pytest.mark.parametrize("precision, dtype", [("float", torch.float32), ("fp16", torch.float16),
                                              ("bf16", torch.bfloat16)])
def test_save_precision(tmp_path, precision, dtype):
    path = tmp_path / "a.safetensors"
    save_lora(path, _tensors(1), {}, precision)
    tensors, _ = load_lora(path)
    assert {t.dtype for t in tensors.values()} == {dtype}


@pytest.mark.parametrize("suffix", [".ckpt", ".pt"])
def test_pickle_formats_load_with_weights_only(tmp_path, suffix):
    path = tmp_path / f"a{suffix}"
    save_lora(path, _tensors(3), {}, "float")
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["lora_unet_block_0.lora_down.weight"], _tensors(3)["lora_unet_block_0.lora_down.weight"])


WRITER = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    from trainer.training.export import save_lora
    path = Path(sys.argv[1])
    version = 0
    while True:
        version += 1
        tensors = {f"w{i}": torch.full((512, 512), float(version)) for i in range(16)}
        save_lora(path, tensors, {"version": str(version)}, "float")
        print(version, flush=True)
""")


def test_killed_during_save_leaves_old_or_new_file(tmp_path):
    """SIGKILL at random moments of a save loop: the file under the final name always loads whole."""
    path = tmp_path / "lora.safetensors"
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=REPO, stdout=subprocess.PIPE,
                                text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        first = proc.stdout.readline()  # at least one complete save happened
        assert first.strip()
        time.sleep(0.03 + 0.1 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        tensors, meta = load_lora(path)
        version = float(meta["version"])
        assert all(torch.equal(t, torch.full((512, 512), version)) for t in tensors.values())
        assert len(tensors) == 16
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "lora.safetensors"]
    assert len(leftovers) <= 1 and all(name.endswith(".partial") for name in leftovers), leftovers
    save_lora(path, _tensors(1), {"version": "last"}, "float")  # the next save clears what a kill left
    assert [p.name for p in tmp_path.iterdir()] == ["lora.safetensors"]
