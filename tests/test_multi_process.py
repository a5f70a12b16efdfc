"""Several processes on the CPU (gloo), started by `python -m trainer train` itself (trainer/run/launch.py): the
launch keys, DDP with parameters that take no gradient, and two "machines" on 127.0.0.1."""

import shutil
import socket

import pytest
import safetensors
import torch
from conftest import read_events, run_cli, write_config
from safetensors.torch import load_file

from trainer.common.errors import ConfigError
from trainer.config.io import validate_config
from trainer.run.launch import launch_argv, launch_problems


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_sdxl_with_both_text_encoders_trained_in_two_processes(tmp_path, make_config, tiny_sdxl):
    """SDXL's first text encoder gives its penultimate layer: its last layer's LoRA takes no gradient."""
    path = write_config(tmp_path / "c.yaml", make_config(pretrained_model_name_or_path=str(tiny_sdxl),
                                                         num_processes=2, max_train_steps=2,
                                                         network_train_unet_only=False))
    result = run_cli("train", path, "--run-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    events = read_events(tmp_path / "run")
    assert events[-1] == {**events[-1], "type": "finished", "status": "completed"}
    with safetensors.safe_open(str(tmp_path / "out" / "test.safetensors"), "pt") as handle:
        prefixes = {key.split("_", 2)[0] + "_" + key.split("_", 2)[1] for key in handle.keys()}
    assert {"lora_te1", "lora_te2", "lora_unet"} <= prefixes


@pytest.mark.parametrize("processes", [2, 3])
def test_processes_share_the_batches_one_process_with_their_total_batch_trains(processes):
    """Process r holds rows r*b..(r+1)*b-1 of each batch the single process trains with batch b × processes, in
    its order and steps; short batches leave a process fewer rows (weighted up) or a stand-in row (weight 0)."""
    from pathlib import Path

    from trainer.dataset.plan import Entry, make_plan
    from trainer.dataset.scan import DatasetScan, ImageItem
    from trainer.dataset.stream import schedule

    item = ImageItem(Path("1_a/a.png"), "a", True, 64, 64)
    entries = [Entry(item, (64, 64) if i < 9 else (96, 64), False) for i in range(10)]
    alone = schedule(entries, 2 * processes, 2, 7, 6)
    shares = [schedule(entries, 2, 2, 7, 6, rank, processes) for rank in range(processes)]
    assert all(len(share) == len(alone) for share in shares)
    for whole, parts in zip(alone, zip(*shares)):
        rows = [part for part in parts if part.weight]
        assert sum((part.indices for part in rows), ()) == whole.indices
        assert {(p.epoch, p.step, p.position, p.last_of_step, p.global_size) for p in parts} == {
            (whole.epoch, whole.step, whole.position, whole.last_of_step, len(whole.indices))}
        assert sum(part.weight for part in parts) == pytest.approx(processes)
        assert [part.weight for part in rows] == [len(p.indices) * processes / len(whole.indices) for p in rows]
        assert all(part.indices == whole.indices[:1] and part.first_row == 0 for part in parts if not part.weight)
    assert any(not part.weight for parts in zip(*shares) for part in parts)  # the short batches were met
    plans = [make_plan(entries, DatasetScan(), train_batch_size=batch, gradient_accumulation_steps=2,
                       max_train_epochs=1, max_train_steps=None, num_processes=count)
             for batch, count in ((2 * processes, 1), (2, processes))]
    assert plans[0].steps_per_epoch == plans[1].steps_per_epoch


def test_each_process_draws_its_rows_of_the_whole_batch_noise():
    """A step's random numbers for rows [start, stop) are those rows of the numbers one process draws for the
    whole batch: noise with offset and multires, timesteps, ip noise, each random strength."""
    from diffusers import DDPMScheduler

    from trainer.config import TrainConfig
    from trainer.training.draws import Draws
    from trainer.training.noise import noisy_latents

    config = TrainConfig(noise_offset=0.1, noise_offset_random_strength=True, adaptive_noise_scale=0.01,
                         multires_noise_iterations=3, ip_noise_gamma=0.1, ip_noise_gamma_random_strength=True)
    scheduler, latents = DDPMScheduler(), torch.randn(4, 4, 16, 16)
    whole = noisy_latents(config, scheduler, latents, Draws.whole(4, "7:3:1"))
    parts = [noisy_latents(config, scheduler, latents[start:stop], Draws("7:3:1", start, stop, 4))
             for start, stop in ((0, 1), (1, 3), (3, 4))]
    for got, expected in zip(map(torch.cat, zip(*parts)), whole):
        assert torch.allclose(got.float(), expected.float(), rtol=1e-6, atol=1e-6)
    other = noisy_latents(config, scheduler, latents, Draws.whole(4, "7:3:2"))[1]
    assert not torch.allclose(other, whole[1])  # the next micro-batch draws other numbers


def test_two_processes_train_what_one_process_with_the_doubled_batch_trains(tmp_path, make_config, train_dir):
    """Data parallel: 2 processes × batch 1 train the LoRA that 1 process × batch 2 trains, with gradient
    accumulation, the text encoder trained and every random option a sample meets (captions, flips, noise). Three
    images share a bucket and one has its own, so at batch 2 each bucket ends in a short batch: there one process
    has the row and the other none (it computes with weight 0)."""
    folder = tmp_path / "data" / "1_shapes"
    folder.mkdir(parents=True)
    for name in ("5_circle/circle_00", "5_circle/circle_03", "3_square/square_00", "5_circle/circle_01"):
        for suffix in (".png", ".txt"):
            shutil.copy(train_dir / (name + suffix), folder)
    common = dict(train_data_dir=str(folder.parent), resolution="80", max_train_steps=None, max_train_epochs=2,
                  gradient_accumulation_steps=2, network_train_unet_only=False, shuffle_caption=True,
                  caption_dropout_rate=0.25, flip_aug=True, noise_offset=0.05, noise_offset_random_strength=True,
                  multires_noise_iterations=3, ip_noise_gamma=0.05)
    losses = {}
    for name, settings in {"two": dict(num_processes=2, train_batch_size=1), "one": dict(train_batch_size=2)}.items():
        path = write_config(tmp_path / f"{name}.yaml", make_config(output_name=name, **common, **settings))
        result = run_cli("train", path, "--run-dir", tmp_path / name)
        assert result.returncode == 0, result.stderr[-3000:]
        losses[name] = [event["loss"] for event in read_events(tmp_path / name) if event["type"] == "step"]
    assert len(losses["one"]) == 4 and losses["two"] == pytest.approx(losses["one"], rel=1e-4)
    two, one = (load_file(tmp_path / "out" / f"{name}.safetensors") for name in ("two", "one"))
    assert two.keys() == one.keys() and any(key.startswith("lora_te") for key in one)
    assert any(float(one[key].abs().max()) > 1e-4 for key in one if "lora_up" in key)  # it trained
    # float32 on the CPU: an all-reduced mean of per-process gradients and a batch's mean gradient differ only in
    # the order of additions (~1e-7 relative, ~1e-11 absolute). AdamW divides each gradient by its RMS + eps (1e-8),
    # so where a gradient is near 0 that becomes up to ~1e-6 of a weight; atol is a hundredth of one step (lr 1e-3).
    # Rows given another sample's noise or a per-process batch order differ by about a whole step.
    assert all(torch.allclose(two[key], one[key], rtol=1e-4, atol=1e-5) for key in one)


def test_two_machines_on_one_host_train_together(tmp_path, make_config):
    """num_machines 2: each "machine" runs the same command with its machine_rank; only rank 0 writes."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    port = free_port()
    commands = []
    for rank in (0, 1):
        config = make_config(num_processes=2, num_machines=2, machine_rank=rank, main_process_ip="127.0.0.1",
                             main_process_port=port, max_train_steps=2)
        path = write_config(tmp_path / f"machine{rank}.yaml", config)
        commands.append(subprocess.Popen([sys.executable, "-m", "trainer", "train", str(path), "--run-dir",
                                          str(tmp_path / f"run{rank}")], cwd=REPO, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True,
                                         env={**os.environ, "PYTHONPATH": str(REPO)}))
    outputs = [process.communicate(timeout=300)[0] for process in commands]
    assert [process.returncode for process in commands] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    events = read_events(tmp_path / "run0")
    assert events[0]["num_processes"] == 2 and events[-1]["status"] == "completed"
    assert not (tmp_path / "run1" / "events.jsonl").exists()  # the second machine writes nothing


@pytest.mark.parametrize(("settings", "key", "text"), [
    ({"machine_rank": 2, "num_machines": 2, "main_process_ip": "10.0.0.1", "num_processes": 2}, "machine_rank",
     "number the machines"),
    ({"num_machines": 2, "num_processes": 2}, "main_process_ip", "set main_process_ip"),
    ({"num_processes": 3, "num_machines": 2, "main_process_ip": "10.0.0.1"}, "num_processes", "multiple of"),
    ({"num_processes": 2, "gpu_ids": "0"}, "gpu_ids", "one GPU per process"),
    ({"gpu_ids": "0,x"}, "gpu_ids", "GPU numbers"),
])
def test_launch_keys_are_checked(make_config, settings, key, text):
    with pytest.raises(ConfigError) as caught:
        validate_config(make_config(**settings))
    [problem] = caught.value.problems
    assert problem.keys[0] == key and text in str(problem)


def test_this_machine_is_checked_for_its_gpus_and_port(make_config):
    config = validate_config(make_config(num_processes=4, gpu_ids="0,1,5,6"))
    [missing] = launch_problems(config, gpus=2)
    assert missing.keys == ("gpu_ids",) and "no GPU 5, 6" in str(missing)
    [too_many] = launch_problems(validate_config(make_config(num_processes=4)), gpus=2)
    assert too_many.keys == ("num_processes",) and "at most 2" in str(too_many)
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        taken = validate_config(make_config(num_processes=2, main_process_port=busy.getsockname()[1]))
        [port] = launch_problems(taken, gpus=0)
    assert port.keys == ("main_process_port",) and "in use" in str(port)
    argv = launch_argv(validate_config(make_config(num_processes=4, num_machines=2, machine_rank=1,
                                                   main_process_ip="10.0.0.1")), "c.yaml", "run", 29500)
    assert argv[1:8] == ["-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=2", "--node_rank=1",
                         "--master_addr=10.0.0.1", "--master_port=29500"]


def test_the_gui_shows_what_train_will_start(make_config, monkeypatch):
    from ui import live
    from ui.review import review

    class Worker:  # the GUI asks its worker process which GPUs there are
        def gpu_list(self):
            return [{"index": index, "name": "RTX 4090", "gib": 24.0} for index in range(3)]

        def gpu_memory_gib(self):
            return 24.0

    monkeypatch.setattr(live, "worker", Worker)
    shown = live.plan_markdown(review({**make_config(), "num_processes": 2, "gpu_ids": "1,2"}), "en")
    assert "GPUs found: 0: RTX 4090 (24 GiB)" in shown and "2 training processes on this machine, GPUs 1, 2" in shown
    assert "--nproc_per_node=2" in shown
    assert "进程与显卡" in live.plan_markdown(review({**make_config(), "num_processes": 2}), "zh")


def test_kohya_ss_and_sd_scripts_launch_settings_import(tmp_path):
    import json

    from trainer.presets.importers import import_file

    kohya = tmp_path / "kohya.json"
    kohya.write_text(json.dumps({"LoRA_type": "Standard", "num_processes": 2, "gpu_ids": "0,1", "num_machines": 1,
                                 "main_process_port": 0, "multi_gpu": True}), encoding="utf-8")
    settings = import_file(kohya).settings
    assert (settings["num_processes"], settings["gpu_ids"]) == (2, "0,1") and "multi_gpu" not in settings
    assert "main_process_port" not in settings or settings["main_process_port"] is None  # 0: kohya_ss leaves it out
    toml = tmp_path / "config.toml"
    toml.write_text('ddp_timeout = 60\nddp_static_graph = true\ndeepspeed = true\n', encoding="utf-8")
    result = import_file(toml)
    assert (result.settings["ddp_timeout"], result.settings["ddp_static_graph"]) == (60, True)
    assert "deepspeed" not in result.settings
