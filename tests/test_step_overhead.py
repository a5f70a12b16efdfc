"""Step overhead (issue 15): one host readback per optimizer step, batches built ahead on a thread for a GPU (in
turn on the CPU), torch_compile and channels_last for the denoiser, and torch's CPU thread count on small
machines."""

import math
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import read_events

from trainer.config import TrainConfig
from trainer.config.io import validate_config
from trainer.dataset.prefetch import DEPTH, ahead, depth_for
from trainer.families.registry import load_family
from trainer.run.events import RunLog
from trainer.training import loop
from trainer.training.network import inject_network
from trainer.training.speed import cpu_threads, speed_up_denoiser, use_cpu_threads

TORCH_DIR = str(Path(torch.__file__).parent)
READBACKS = ("item", "tolist", "__bool__", "__float__", "__int__")  # Tensor methods that copy a value to the host


def test_one_readback_per_step_and_a_nan_micro_batch_stops_its_step(tmp_path, make_config, monkeypatch):
    """Every host readback outside torch's own code is recorded between the step events (torch's optimizers read
    their step counters, which live on the CPU even for a GPU run). With 2 micro-batches per step, each step reads
    back once: the losses stay on the device until the step ends. The first micro-batch of step 3 is NaN: its
    loss is averaged on the device with the next one's, and the run still stops at step 3, with no update. On the
    CPU the batches are built in turn, on the main thread."""
    marks: list[str] = []
    for name in READBACKS:
        original = getattr(torch.Tensor, name)

        def recorded(self, *args, _original=original, **kwargs):
            if not sys._getframe(1).f_code.co_filename.startswith(TORCH_DIR):
                marks.append("readback")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, recorded)
    log_event, run, with_text, built, builders = loop.RunLog.event, loop.Trainer.run, loop.Trainer._with_text, [], set()

    def event(log, kind, **fields):
        marks.append(kind)
        return log_event(log, kind, **fields)

    def marked_run(trainer):
        marks.append("run")
        return run(trainer)

    def poisoned(trainer, data):  # micro-batch 5 is the first of step 3
        built.append(data)
        builders.add(threading.current_thread().name)
        if len(built) == 5:
            data["latents"] = torch.full_like(data["latents"], math.nan)
        return with_text(trainer, data)

    monkeypatch.setattr(loop.RunLog, "event", event)
    monkeypatch.setattr(loop.Trainer, "run", marked_run)
    monkeypatch.setattr(loop.Trainer, "_with_text", poisoned)
    config = make_config(gradient_accumulation_steps=2, max_train_steps=4, max_grad_norm=0)
    assert loop.train(validate_config(config), tmp_path / "run") == "failed"
    per_step, count = [], 0
    for kind in marks[marks.index("run"):]:
        if kind == "readback":
            count += 1
        elif kind in ("step", "health"):
            per_step.append((kind, count))
            count = 0
    assert per_step == [("step", 1), ("step", 1), ("health", 1)]  # steps 1 and 2, then step 3, the NaN one
    health = next(e for e in read_events(tmp_path / "run") if e["type"] == "health")
    assert health["code"] == "nan_loss" and health["step"] == 3
    assert builders == {threading.main_thread().name}


def test_batches_are_built_ahead_for_an_accelerator_and_in_turn_on_the_cpu():
    assert [depth_for(kind) for kind in ("cuda", "xpu", "mps", "cpu")] == [DEPTH, DEPTH, DEPTH, 0]
    before = threading.active_count()
    stream = ahead(broken_after(2), depth=0)
    assert next(stream) == 0 and threading.active_count() == before  # no thread: nothing is built ahead
    assert next(stream) == 1
    with pytest.raises(ValueError, match="broken image"):
        next(stream)


def broken_after(count: int):
    yield from range(count)
    raise ValueError("broken image")


def test_ahead_keeps_the_order_runs_ahead_and_raises_where_it_failed():
    built = threading.Event()

    def items():
        yield from range(3)
        built.set()  # the thread has built item 2 while the consumer still holds item 0
        yield 3
        raise ValueError("broken image")

    stream = ahead(items(), depth=3)
    assert next(stream) == 0 and built.wait(timeout=60)
    assert [next(stream) for _ in range(3)] == [1, 2, 3]
    with pytest.raises(ValueError, match="broken image"):
        next(stream)


def test_ahead_closed_early_ends_its_thread():
    before = threading.active_count()
    stream = ahead(iter(range(100)), depth=2)
    assert next(stream) == 0
    stream.close()  # a STOP or a failed step leaves the loader behind
    assert threading.active_count() == before


def test_torch_compile_trains(tmp_path, make_config):
    """The config path compiles the denoiser: dynamo traces graphs and the run completes. aot_eager traces
    without generating code (inductor's first step takes minutes on a CPU; the GPU side-by-side uses it)."""
    torch._dynamo.reset()
    config = make_config(torch_compile=True, dynamo_backend="aot_eager", max_train_steps=2)
    assert loop.train(validate_config(config), tmp_path / "run") == "completed"
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0
    assert "torch_compile: the denoiser's forward, backend aot_eager" in (tmp_path / "run" / "train.log").read_text()
    torch._dynamo.reset()


def test_channels_last_only_for_convolutions_on_cuda():
    def conv_net():
        return torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3), torch.nn.Linear(8, 8))

    config = TrainConfig()
    unet, on_cpu, transformer = conv_net(), conv_net(), torch.nn.Sequential(torch.nn.Linear(8, 8))
    assert speed_up_denoiser(unet, config, torch.device("cuda")) == ["channels_last: the denoiser's convolutions"]
    assert unet[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert speed_up_denoiser(on_cpu, config, torch.device("cpu")) == []
    assert not on_cpu[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert speed_up_denoiser(transformer, config, torch.device("cuda")) == []


def test_cpu_threads_leave_one_core_free():
    assert [cpu_threads(cores, 64) for cores in (1, 2, 4, 16)] == [1, 1, 3, 15]
    assert cpu_threads(32, 16) == 16  # never above torch's default (its physical cores)


def test_omp_num_threads_is_honoured(monkeypatch):
    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(2)
    try:
        assert use_cpu_threads().startswith("torch threads: 2 (OMP_NUM_THREADS)")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_under_mixed_precision_adapters_leave_their_input_to_autocast(tmp_path, make_config):
    """peft casts every adapter input to the fp32 adapter weights' dtype; under autocast, which computes the matmul
    in bf16 anyway, that copy changes nothing. Danlu turns it off for mixed precision: the same loss and gradients,
    bit for bit, without the copies (a full-size SDXL step on the CPU: 3.74 -> 2.91 s, docs/benchmarks-gpu.md)."""
    config = validate_config(make_config(mixed_precision="bf16"))
    model = load_family(config, torch.bfloat16)
    network = inject_network(config, model, torch.float32, RunLog(tmp_path, enabled=False))
    adapters = [layer for layer in model.denoiser.modules() if hasattr(layer, "cast_input_dtype_enabled")]
    assert adapters and not any(layer.cast_input_dtype_enabled for layer in adapters)
    params = [p for group in network.groups if group["name"] == "unet" for p in group["params"]]
    for param in params:  # a trained LoRA: lora_up is no longer zero
        torch.nn.init.normal_(param, std=0.02)
    torch.manual_seed(0)
    latents, context = torch.randn(1, 4, 8, 8), torch.randn(1, 77, model.denoiser.config.cross_attention_dim)

    def step(casting: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        for layer in adapters:
            layer.cast_input_dtype_enabled = casting
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model.denoiser(latents, torch.tensor([500]), context).sample.float().square().mean()
        grads = torch.autograd.grad(loss, params)
        return loss, grads

    (loss_cast, grads_cast), (loss_left, grads_left) = step(True), step(False)
    assert torch.equal(loss_cast, loss_left)
    assert all(torch.equal(a, b) for a, b in zip(grads_cast, grads_left))
