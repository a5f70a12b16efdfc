"""The GUI process never imports torch (nor diffusers, transformers, peft, accelerate, bitsandbytes): the page,
its live review with the LR chart and the full check of Check/Start all run without them, asking the worker
child process (trainer/run/worker.py) what needs torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from trainer.checks.lr_curve import lr_curve
from trainer.common.errors import ConfigError
from trainer.config import TrainConfig
from trainer.config.io import validate_config
from trainer.run.worker import Worker, WorkerFailed

HEAVY = ("torch", "diffusers", "transformers", "peft", "accelerate", "bitsandbytes")

# The page as app.py builds it, one live review of the demo config through the page's own handler (the LR chart
# included), and the full check: then which heavy modules this process holds.
GUI_SESSION = f"""
import json, sys
from ui import settings
from ui.app import build_app
from ui.fields import form_values
from ui.review import review, start_worker, worker
from trainer.families.detect import detect_family

start_worker()  # as app.py does
initial = settings.demo_form()
blocks = build_app("en", initial)
refresh = next(f for f in blocks.fns.values() if f.name == "refresh")
views = refresh.fn("en", {{}}, *form_values(initial))
family, dataset, plan, advice, chart = views[:5]
full = review(initial, full=True)
pickled = detect_family(sys.argv[1])  # a .ckpt base model: read by the worker
worker().close()
print(json.dumps({{
    "heavy": [name for name in {HEAVY!r} if name in sys.modules],
    "config": initial, "plan": plan, "caption": chart.get("caption", ""),
    "chart": chart["value"].to_dict("records"),
    "full_problems": [str(p) for p in full.problems], "total_steps": full.plan.total_steps, "pickled": pickled,
}}))
"""


def test_the_gui_builds_reviews_and_checks_without_torch(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "DANLU_HOME": str(tmp_path / "home")}
    checkpoint = tmp_path / "sd15.ckpt"  # a pickle: only torch reads it, so the worker does
    torch.save({"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3),
                               "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(4),
                               "first_stage_model.decoder.conv_in.weight": torch.zeros(4, 4, 3, 3)}}, checkpoint)
    done = subprocess.run([sys.executable, "-c", GUI_SESSION, str(checkpoint)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["heavy"] == [] and seen["pickled"] == "sd1"
    assert seen["full_problems"] == [] and seen["plan"].startswith("```text")
    # The chart is the real scheduler's curve, as the training will set it.
    assert seen["caption"] == "" and seen["chart"]
    drawn: dict[str, list[tuple[int, float]]] = {}
    for row in seen["chart"]:
        drawn.setdefault(row["group"], []).append((row["step"], row["lr"]))
    assert_same_curves(drawn, lr_curve(validate_config(seen["config"]), seen["total_steps"], family="sd1"))


def assert_same_curves(got: dict[str, list[tuple[int, float]]], expected: dict[str, list[tuple[int, float]]]):
    assert list(got) == list(expected)
    for group, points in expected.items():
        assert [step for step, _ in got[group]] == [step for step, _ in points]
        assert [lr for _, lr in got[group]] == pytest.approx([lr for _, lr in points])


@pytest.fixture(scope="module")
def worker():
    with Worker() as started:
        yield started


def test_the_worker_answers_with_the_real_scheduler_and_the_machine_checks(worker):
    config = TrainConfig(max_train_steps=50, lr_scheduler="cosine", lr_warmup_steps=5, network_train_unet_only=True)
    assert_same_curves(worker.lr_curve(config, 50), lr_curve(config, 50))
    assert worker.gpu_facts() == (False, False)  # this test machine has no GPU
    assert worker.gpu_memory_gib() is None
    (problem,) = worker.machine_problems(TrainConfig(mixed_precision="fp16"), cuda=False)
    assert problem.keys == ("mixed_precision",) and "CUDA" in problem.message and problem.hint


def test_a_refusal_in_the_worker_is_the_config_error_it_raised(worker):
    with pytest.raises(ConfigError) as refused:
        worker.lr_curve(TrainConfig(lr_scheduler_type="NoSuchScheduler"), 10)  # looked up in torch's schedulers
    (problem,) = refused.value.problems
    assert problem.keys == ("lr_scheduler_type",) and "has no NoSuchScheduler" in problem.message


def test_a_worker_that_ended_is_replaced_for_the_next_question(worker):
    worker.start()
    first = worker._process
    first.kill()
    first.wait()
    assert worker.ask("gpu_facts") == [False, False]
    assert worker._process is not first and worker._process.poll() is None


def test_a_question_the_worker_cannot_answer_fails_clearly(worker):
    with pytest.raises(WorkerFailed, match="no such question"):
        worker.ask("no such question")
