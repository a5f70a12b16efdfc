"""Bad input of every kind gets a message, never a traceback (issue 18's matrix).

Each refusal case builds its bad input under a folder whose name holds Chinese characters and spaces (so every
path does), runs `check` in this process (no model loads) and asserts: exit status 2, no traceback text, the
message names the field or file, and every file that existed before is unchanged. A few run through `train`.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_cli, write_config
from PIL import Image

from trainer.__main__ import main

Build = Callable[[Path, dict], list[str]]  # (workspace, base config) -> the CLI's arguments


@dataclass(frozen=True)
class Case:
    name: str
    build: Build
    names: str  # what the message must name: a config key, an option or a file name


def _config(folder: Path, settings: dict, name: str = "config.yaml") -> Path:
    return write_config(folder / name, settings)


def _check(**overrides) -> Build:
    """`check` of the base config with overrides; a value that is a function gets the workspace."""
    def build(work: Path, base: dict) -> list[str]:
        values = {key: value(work) if callable(value) else value for key, value in overrides.items()}
        return ["check", str(_config(work, {**base, **values}))]
    return build


def _file(name: str, data: bytes | str) -> Callable[[Path], str]:
    def make(work: Path) -> str:
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        return str(path)
    return make


def _folder(name: str) -> Callable[[Path], str]:
    def make(work: Path) -> str:
        (work / name).mkdir(parents=True, exist_ok=True)
        return str(work / name)
    return make


def _safetensors(size: int = 64, keep: float = 1.0, key: str = "lora_unet_x.lora_down.weight") -> bytes:
    header = json.dumps({key: {"dtype": "F32", "shape": [size], "data_offsets": [0, 4 * size]}}).encode()
    data = struct.pack("<Q", len(header)) + header + bytes(4 * size)
    return data[:int(len(data) * keep)]


def _png(mode: str = "RGB", size: tuple[int, int] = (64, 64)) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb_png() -> bytes:
    """A tiny PNG whose header claims 200000 x 200000 pixels (PIL refuses it as a decompression bomb)."""
    data = bytearray(_png("1", (1, 1)))
    data[16:24] = struct.pack(">II", 200_000, 200_000)
    return bytes(data)


def _pickled_code() -> bytes:
    """A torch file whose pickle calls os.system when loaded without weights_only."""
    import io
    import os

    import torch

    class Evil:
        def __reduce__(self):
            return os.system, ("echo pwned",)

    buffer = io.BytesIO()
    torch.save({"x": Evil()}, buffer)
    return buffer.getvalue()


def _dataset(folder: str, files: dict[str, bytes | str]) -> Callable[[Path], str]:
    """A train_data_dir with one sub-folder holding files."""
    def make(work: Path) -> str:
        root = work / "数据 集"
        for name, data in files.items():
            _file(f"数据 集/{folder}/{name}", data)(work)
        (root / folder).mkdir(parents=True, exist_ok=True)
        return str(root)
    return make


def _state(files: dict[str, bytes | str]) -> Callable[[Path], str]:
    def make(work: Path) -> str:
        for name, data in files.items():
            _file(f"状态 state/{name}", data)(work)
        return str(work / "状态 state")
    return make


def _raw_config(name: str, data: bytes | str) -> Build:
    """`check` of a config file written as given (its syntax, encoding or shape is the bad input)."""
    def build(work: Path, base: dict) -> list[str]:
        return ["check", _file(name, data)(work)]
    return build


def _encoded_config(encoding: str, extra: str = "") -> Build:
    """The base config with a bad value, saved in encoding (so the message proves the file was read)."""
    def build(work: Path, base: dict) -> list[str]:
        text = yaml.safe_dump({**base, "network_dim": -4, "output_name": "中文"}, allow_unicode=True) + extra
        return ["check", _file("配置.yaml", text.encode(encoding))(work)]
    return build


def _lora(*args: str | Callable[[Path], str]) -> Build:
    def build(work: Path, base: dict) -> list[str]:
        return [arg(work) if callable(arg) else arg for arg in args]
    return build


GOOD_LINE = "a red circle --w 64 --h 64 --s 2"
STATE_JSON = json.dumps({"current_step": 2, "current_epoch": 1})
CASES = [
    # paths
    Case("config missing", lambda w, b: ["check", str(w / "无 config.yaml")], "无 config.yaml"),
    Case("config is a folder", lambda w, b: ["check", _folder("配置 dir.yaml")(w)], "配置 dir.yaml"),
    Case("model missing", _check(pretrained_model_name_or_path=lambda w: str(w / "无 model.safetensors")),
         "pretrained_model_name_or_path"),
    Case("model folder empty", _check(pretrained_model_name_or_path=_folder("空 model")),
         "pretrained_model_name_or_path"),
    Case("train_data_dir missing", _check(train_data_dir=lambda w: str(w / "无 data")), "train_data_dir"),
    Case("train_data_dir is a file", _check(train_data_dir=_file("data.txt", "x")), "train_data_dir"),
    Case("reg_data_dir is a file", _check(reg_data_dir=_file("reg.txt", "x")), "reg_data_dir"),
    Case("output_dir is a file", _check(output_dir=_file("输出.txt", "x")), "output_dir"),
    Case("output_dir under a file", _check(output_dir=lambda w: _file("输出.txt", "x")(w) + "/runs"), "output_dir"),
    Case("vae missing", _check(vae=lambda w: str(w / "无 vae.safetensors")), "vae"),
    Case("network_weights missing", _check(network_weights=lambda w: str(w / "无.safetensors")), "network_weights"),
    Case("resume missing", _check(resume=lambda w: str(w / "无 state")), "resume"),
    # model files
    Case("model 0-byte", _check(pretrained_model_name_or_path=_file("模型.safetensors", b"")),
         "pretrained_model_name_or_path"),
    Case("model folder with a part cut short", _check(pretrained_model_name_or_path=lambda w: str(Path(_file(
        "模型 dir/unet/diffusion_pytorch_model.safetensors", _safetensors(keep=0.9))(w)).parent.parent)), "cut short"),
    Case("model truncated, header intact", _check(pretrained_model_name_or_path=_file(
        "模型.safetensors", _safetensors(keep=0.8, key="model.diffusion_model.input_blocks.0.0.weight"))), "cut short"),
    Case("model garbage", _check(pretrained_model_name_or_path=_file("模型.safetensors", b"\xff" * 300)),
         "pretrained_model_name_or_path"),
    Case("model pickled code", _check(pretrained_model_name_or_path=lambda w: _file("模型.ckpt", _pickled_code())(w)),
         "pickled code"),
    Case("model is a LoRA", _check(pretrained_model_name_or_path=_file("lora.safetensors", _safetensors())),
         "pretrained_model_name_or_path"),
    Case("model text file", _check(pretrained_model_name_or_path=_file("模型.safetensors", "hello")),
         "pretrained_model_name_or_path"),
    Case("network_weights 0-byte", _check(network_weights=_file("网络.safetensors", b"")), "network_weights"),
    Case("network_weights truncated", _check(network_weights=_file("网络.safetensors", _safetensors(keep=0.7))),
         "cut short"),
    Case("network_weights pickled code", _check(network_weights=lambda w: _file("网络.pt", _pickled_code())(w)),
         "pickled code"),
    Case("network_weights garbage", _check(network_weights=_file("网络.safetensors", b"\x00" * 100)),
         "network_weights"),
    Case("vae truncated", _check(vae=_file("vae 文件.safetensors", _safetensors(keep=0.5))), "vae"),
    # datasets
    Case("dataset empty", _check(train_data_dir=_folder("空 数据")), "train_data_dir"),
    Case("folder without repeats", _check(train_data_dir=_dataset("zkz cat", {"a.png": _png()})), "10_zkz cat"),
    Case("folder with 0 repeats", _check(train_data_dir=_dataset("0_zkz", {"a.png": _png()})), "'10_zkz'"),
    Case("absurd repeats", _check(train_data_dir=_dataset("100000000_x", {"a.png": _png()})), "100000000_x"),
    Case("corrupt image", _check(train_data_dir=_dataset("5_坏", {"a.png": b"\x89PNG garbage"})), "a.png"),
    Case("truncated image", _check(train_data_dir=_dataset("5_坏", {"a.png": _png(size=(256, 256))[:60]})), "a.png"),
    Case("0-byte image", _check(train_data_dir=_dataset("5_坏", {"空.jpg": b""})), "空.jpg"),
    Case("huge image", _check(train_data_dir=_dataset("5_大", {"big.png": _bomb_png()})), "big.png"),
    Case("unsupported format", _check(train_data_dir=_dataset("5_x", {"a.tiff": b"II*\x00"})), "train_data_dir"),
    Case("animated gif only", _check(train_data_dir=_dataset("5_x", {"a.gif": b"GIF89a"})), "train_data_dir"),
    Case("images directly in the root", _check(train_data_dir=lambda w: str(Path(_file(
        "平 root/a.png", _png())(w)).parent)), "train_data_dir"),
    Case("caption extension a path", _check(train_data_dir=_dataset("5_x", {"a.png": _png()}),
                                            caption_extension=".txt/"), "caption_extension"),
    # captions and prompts
    Case("prompt unknown option", _check(sample_prompts=["a cat --zz 5"]), "--zz"),
    Case("prompt 0 steps", _check(sample_prompts=["a cat --s 0"]), "sample_prompts"),
    Case("prompt bad width", _check(sample_prompts=["a cat --w abc"]), "sample_prompts"),
    Case("prompt bad seed", _check(sample_prompts=["a cat --d -1"]), "sample_prompts"),
    Case("prompt NaN scale", _check(sample_prompts=["a cat --l nan"]), "sample_prompts"),
    Case("prompt file missing", _check(sample_prompts=lambda w: str(w / "无 prompts.txt")), "sample_prompts"),
    Case("prompt file is a folder", _check(sample_prompts=_folder("提示 dir")), "sample_prompts"),
    Case("prompt file UTF-16 no BOM", _check(sample_prompts=_file("提示.txt", GOOD_LINE.encode("utf-16-le"))),
         "sample_prompts"),
    Case("prompt file GBK, bad option", _check(sample_prompts=_file("提示.txt", "一只猫 --x 1".encode("gbk"))),
         "--x"),
    Case("prompt file binary", _check(sample_prompts=_file("提示.txt", bytes(range(256)))), "sample_prompts"),
    # configs
    Case("YAML syntax", _raw_config("配置.yaml", "network_dim: [4\n"), "配置.yaml"),
    Case("JSON syntax", _raw_config("配置.json", "{\"network_dim\": 4,"), "配置.json"),
    Case("TOML syntax", _raw_config("配置.toml", "network_dim = = 4"), "配置.toml"),
    Case("top level a list", _raw_config("配置.yaml", "- 1\n- 2\n"), "配置.yaml"),
    Case("binary config", _raw_config("配置.yaml", bytes(range(256)) * 4), "配置.yaml"),
    Case("UTF-16 without BOM", _raw_config("配置.yaml", "network_dim: 4\n".encode("utf-16-le")), "UTF-8"),
    Case("invalid GBK bytes", _raw_config("配置.yaml", b"output_name: \x81\x20\n"), "UTF-8"),
    Case("GBK config read, its bad value named", _encoded_config("gbk"), "network_dim"),
    Case("UTF-16 config read, its bad value named", _encoded_config("utf-16"), "network_dim"),
    Case("UTF-8 BOM config read, its bad value named", _encoded_config("utf-8-sig"), "network_dim"),
    Case("unsafe YAML tag", _raw_config("配置.yaml", "a: !!python/object/apply:os.system ['echo pwned']\n"),
         "配置.yaml"),
    Case("alias bomb", _raw_config("配置.yaml", "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n" for p, c in zip("abcdefg", "bcdefgh"))),
        "配置.yaml"),
    Case("unknown key", _check(netwrok_dim=4), "netwrok_dim"),
    Case("wrong type", _check(network_dim="many"), "network_dim"),
    Case("negative network_dim", _check(network_dim=-4), "network_dim"),
    Case("learning_rate a word", _check(learning_rate="fast"), "learning_rate"),
    Case("resolution nonsense", _check(resolution="big"), "resolution"),
    Case("unknown optimizer choice", _check(mixed_precision="fp64"), "mixed_precision"),
    Case("network_args a number", _check(network_args=5), "network_args"),
    Case("network_args a mapping", _check(network_args={"conv_dim": 4}), "network_args"),
    Case("network_args without =", _check(network_args=["conv_dim"]), "network_args"),
    Case("network_args bad number", _check(network_args=["conv_dim=abc"]), "network_args"),
    Case("long value list", _check(network_dim=list(range(5000))), "network_dim"),
    # presets and imports
    Case("import unknown suffix", _lora("preset", "import", _file("kohya.yaml", "a: 1"), "-o",
                                        lambda w: str(w / "p.yaml")), "kohya.yaml"),
    Case("import broken JSON", _lora("preset", "import", _file("kohya 配置.json", "{"), "-o",
                                     lambda w: str(w / "p.yaml")), "kohya 配置.json"),
    Case("import binary TOML", _lora("preset", "import", _file("脚本.toml", bytes(range(256))), "-o",
                                     lambda w: str(w / "p.yaml")), "脚本.toml"),
    Case("export onto a folder", _lora("preset", "export", _file("c.yaml", "network_dim: 8\n"), "-o",
                                       _folder("预设 dir.yaml"), "--overwrite"), "-o"),
    # resume states and output places
    Case("resume broken JSON", _check(resume=_state({"train_state.json": "{broken"})), "train_state.json"),
    Case("resume JSON without the step", _check(resume=_state({"train_state.json": "{}"})), "train_state.json"),
    Case("resume without position", _check(resume=_state({"model.safetensors": _safetensors()})), "resume"),
    Case("resume truncated tensors", _check(resume=_state({"train_state.json": STATE_JSON,
                                                           "model.safetensors": _safetensors(keep=0.6)})),
         "model.safetensors"),
    Case("resume truncated optimizer", _check(resume=_state({"train_state.json": STATE_JSON,
                                                            "optimizer.bin": b"PK\x03\x04half"})), "optimizer.bin"),
    Case("existing output without overwrite", lambda w, b: ["check", str(_config(w, {**b, "output_dir": str(
        Path(_file("输出/t.safetensors", _safetensors())(w)).parent), "output_name": "t"}))], "output_name"),
    Case("lora info of a 0-byte file", _lora("lora", "info", _file("空.safetensors", b"")), "空.safetensors"),
    Case("lora info of a truncated file", _lora("lora", "info", _file("半.safetensors", _safetensors(keep=0.6))),
         "半.safetensors"),
    Case("lora resize onto a folder", _lora("lora", "resize", _file("l.safetensors", _safetensors()), "--rank", "2",
                                            "-o", _folder("出 dir.safetensors"), "--overwrite"), "-o"),
    Case("lora resize onto an existing file", _lora("lora", "resize", _file("l.safetensors", _safetensors()),
                                                    "--rank", "2", "-o", _file("已有.safetensors", b"x")), "-o"),
    Case("lora resize under a file", _lora("lora", "resize", _file("l.safetensors", _safetensors()), "--rank", "2",
                                           "-o", lambda w: _file("文件", "x")(w) + "/o.safetensors"), "-o"),
]


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def base(tiny_sd1, train_dir, tmp_path) -> dict:
    return {"pretrained_model_name_or_path": str(tiny_sd1), "train_data_dir": str(train_dir),
            "output_dir": str(tmp_path / "中文 路径" / "out 输出"), "output_name": "t", "resolution": "64",
            "max_train_steps": 4, "network_dim": 4, "mixed_precision": "no", "max_data_loader_n_workers": 0}


def test_the_matrix_is_large():
    assert len(CASES) >= 60 and len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_gets_a_message(case, base, tmp_path, capsys, monkeypatch):
    work = tmp_path / "中文 路径"
    work.mkdir()
    argv = case.build(work, base)
    before = _snapshot(work)
    monkeypatch.setenv("DANLU_JSON_ERRORS", "0")
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own refusals
        status = exc.code
    out, err = capsys.readouterr()
    assert status == 2, out + err
    assert "Traceback" not in out + err and "Error:" not in err, err
    assert case.names in err, err
    assert "weights_only=False" not in err
    after = _snapshot(work)
    assert {name: after.get(name) for name in before} == before  # nothing that existed changed or went


@pytest.mark.parametrize("image", ["16-bit", "CMYK", "palette", "animated webp"])
def test_unusual_images_that_can_train_pass_check(image, base, tmp_path, capsys):
    folder = tmp_path / "中文 路径" / "数据 集" / "3_猫 cat"
    folder.mkdir(parents=True)
    if image == "16-bit":
        Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)).save(folder / "a.png")
    elif image == "animated webp":
        frames = [Image.new("RGB", (64, 64), color) for color in ("red", "blue")]
        frames[0].save(folder / "a.webp", save_all=True, append_images=frames[1:])
    else:
        Image.new({"CMYK": "CMYK", "palette": "P"}[image], (64, 64)).save(folder / ("a.jpg" if image == "CMYK"
                                                                                    else "a.png"))
    (folder / "a.txt").write_bytes("一只猫".encode("gbk"))  # a GBK caption is read, not dropped
    config = _config(tmp_path / "中文 路径", {**base, "train_data_dir": str(folder.parent)})
    assert main(["check", str(config)]) == 0
    assert "3_猫 cat: 1 images × 3 repeats = 3" in capsys.readouterr().out


@pytest.mark.parametrize("unreadable", ["caption", "folder"])
def test_an_unreadable_caption_or_folder_is_named(unreadable, base, tmp_path, capsys, monkeypatch):
    """What a PermissionError would be (this test may run as root, which reads everything)."""
    work = tmp_path / "中文 路径"
    data = Path(_dataset("5_猫", {"a.png": _png(), "a.txt": "cat"})(work))
    bad = data / "5_猫" / ("a.txt" if unreadable == "caption" else "")
    method = "read_bytes" if unreadable == "caption" else "iterdir"
    original = getattr(Path, method)

    def refuse(self, *args, **kwargs):
        if self == bad:
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, method, refuse)
    assert main(["check", str(_config(work, {**base, "train_data_dir": str(data)}))]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(bad) in err and "Permission denied" in err


def test_train_refuses_what_check_refuses_without_a_traceback(base, tmp_path):
    work = tmp_path / "中文 路径"
    work.mkdir()
    config = _config(work, {**base, "network_weights": _file("网络.safetensors", _safetensors(keep=0.7))(work),
                            "sample_prompts": ["a cat --zz 5"]})
    result = run_cli("train", config)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "network_weights" in result.stderr and "--zz" in result.stderr


def test_resume_from_a_state_with_pickled_code_is_refused_in_train(base, tmp_path):
    """The state's header reads, so only loading finds the pickled code: refused, never run, never advised."""
    work = tmp_path / "中文 路径"
    work.mkdir()
    state = _state({"train_state.json": STATE_JSON, "pytorch_model.bin": _pickled_code()})(work)
    result = run_cli("train", _config(work, {**base, "resume": state}))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "weights_only" not in result.stderr
    assert "resume" in result.stderr and "pickled code" in result.stderr
    assert not (work / "pwned").exists()
