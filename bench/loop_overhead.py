"""Danlu's training loop against a bare loop on the same tiny UNet, and torch's thread count on a shared CPU.

    .venv/bin/python bench/loop_overhead.py [--steps N] [--rounds R] [--repo PATH ...] [--out FILE]

Overhead: the bare loop is what any script does for a LoRA step, written with torch, diffusers and peft only
(random cached latents and text-encoder outputs, noise, the UNet forward and backward, clipping, AdamW, one
loss readback); Danlu's loop trains the tiny SD1.5 model with cached latents and text-encoder outputs, the UNet's
LoRA only, the same rank, batch and optimizer. Each run is a fresh process with the same OMP_NUM_THREADS; the
two take turns for --rounds rounds, so a change of machine load weighs on both, and the medians are compared.
--repo measures Danlu's loop of other checkouts too (e.g. the code before a change, from `git archive`).

Threads: Danlu's loop with 2 and with 1 torch threads, once on the quiet machine and once beside a process that
keeps one core busy (a pure Python loop), as a test run or another training would.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train_speed import REPO, WARMUP_STEPS, base_config, machine

LORA_RANK, LORA_ALPHA, BATCH, LEARNING_RATE = 4, 2, 2, 1e-3  # as base_config
LATENT_SIDE, CACHED_BATCHES = 8, 21  # 64 px images; the demo dataset's batches per epoch


def timing(clocks: list[tuple[float, float]]) -> dict:
    """From (wall, process CPU) clock readings after each step: steps per second from the median step time (a
    step that other work on the machine delayed moves a mean, not the median), and the median CPU milliseconds a
    step cost this process (all its threads), which the machine's load hardly moves."""
    steady = clocks[WARMUP_STEPS:]
    wall = statistics.median(b[0] - a[0] for a, b in zip(steady, steady[1:]))
    cpu = statistics.median(b[1] - a[1] for a, b in zip(steady, steady[1:]))
    return {"it_s": 1 / wall, "cpu_ms": cpu * 1000}


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def bare_loop(model: Path, steps: int) -> dict:
    """The reference: a hand-written LoRA step on cached inputs, no Danlu code but the UNet's target names."""
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from peft import LoraConfig

    from trainer.families.sd import UNET_TARGETS

    torch.manual_seed(7)
    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet").requires_grad_(False)
    unet.add_adapter(LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, target_modules=UNET_TARGETS))
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    scheduler = DDPMScheduler.from_pretrained(model, subfolder="scheduler")
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE)
    latents = [torch.randn(BATCH, unet.config.in_channels, LATENT_SIDE, LATENT_SIDE) for _ in range(CACHED_BATCHES)]
    context = torch.randn(BATCH, 77, unet.config.cross_attention_dim)  # CLIP's 77 tokens
    clocks = []
    for step in range(steps):
        clean = latents[step % CACHED_BATCHES]
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (BATCH,))
        prediction = unet(scheduler.add_noise(clean, noise, timesteps), timesteps, context).sample
        loss = torch.nn.functional.mse_loss(prediction.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # the one value any loop reads back to log
        clocks.append(clock())
    return {**timing(clocks), "trained_values": sum(p.numel() for p in params)}


def danlu_loop(config: dict, run_dir: Path) -> dict:
    """Danlu's train(); each `step` event is timed as it is written (events.jsonl's times are in milliseconds)."""
    from safetensors.torch import load_file

    from trainer.config.io import validate_config
    from trainer.run.events import RunLog
    from trainer.training.loop import train

    clocks, event = [], RunLog.event

    def timed(log, kind, **fields):
        event(log, kind, **fields)
        if kind == "step":
            clocks.append(clock())

    RunLog.event = timed
    train(validate_config(config), run_dir)
    tensors = load_file(Path(config["output_dir"]) / f"{config['output_name']}.safetensors")
    return {**timing(clocks),
            "trained_values": sum(t.numel() for k, t in tensors.items() if k.endswith(("lora_down.weight",
                                                                                       "lora_up.weight")))}


def danlu_config(model: Path, data: Path, out: Path, steps: int) -> dict:
    return {**base_config(model, data, out, steps, cuda=False), "cache_text_encoder_outputs": True,
            "network_train_unet_only": True, "lr_scheduler": "constant", "optimizer_type": "AdamW"}


def run_one(spec: dict) -> dict:
    """In the child process: one measurement, of the bare loop or of Danlu's loop of spec["repo"]."""
    sys.path.insert(0, spec["repo"])
    if spec["kind"] == "bare":
        return bare_loop(Path(spec["model"]), spec["steps"])
    return danlu_loop(spec["config"], Path(spec["run_dir"]))


def spawn(spec: dict, threads: int, busy: bool = False) -> dict:
    """One measurement in a fresh process with `threads` torch threads, beside a busy process when asked."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], check=False,
                              capture_output=True, text=True, cwd=spec["repo"], env=env)
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
    lines = proc.stdout.splitlines()
    if proc.returncode == 0 and lines and lines[-1].startswith("RESULT "):
        return json.loads(lines[-1][len("RESULT "):])
    error = next((line for line in reversed(proc.stderr.splitlines()) if line.strip()), f"exit {proc.returncode}")
    raise SystemExit(f"{spec['kind']} failed: {error}")


def overhead(root: Path, model: Path, data: Path, repos: list[str], steps: int, rounds: int,
             threads: int) -> dict[str, list[dict]]:
    """Bare and Danlu runs taking turns; returns each side's results per round."""
    results: dict[str, list[dict]] = {"bare loop": [], **{f"Danlu ({repo})": [] for repo in repos}}
    for round_ in range(rounds):
        print(f"round {round_ + 1}/{rounds}", file=sys.stderr)
        results["bare loop"].append(spawn({"kind": "bare", "repo": str(REPO), "model": str(model),
                                           "steps": steps}, threads))
        for index, repo in enumerate(repos):
            out = root / f"out-{round_}-{index}"
            spec = {"kind": "danlu", "repo": repo, "run_dir": str(root / f"run-{round_}-{index}"),
                    "config": danlu_config(model, data, out, steps)}
            results[f"Danlu ({repo})"].append(spawn(spec, threads))
    return results


def thread_cases(root: Path, model: Path, data: Path, steps: int) -> dict[str, dict]:
    cases = {}
    for busy in (False, True):
        for threads in (2, 1):
            name = f"{threads} thread{'s' if threads > 1 else ''}, {'one more core busy' if busy else 'as it is'}"
            print(f"threads: {name}", file=sys.stderr)
            out = root / f"threads-{threads}-{busy}"
            spec = {"kind": "danlu", "repo": str(REPO), "run_dir": str(out / "run"),
                    "config": danlu_config(model, data, out, steps)}
            cases[name] = {**spawn(spec, threads, busy), "load": os.getloadavg()[0]}
    return cases


def overhead_table(results: dict[str, list[dict]]) -> str:
    """it/s per round and the overhead of each Danlu loop: bare it/s / Danlu it/s - 1 within each round (the runs
    of a round are minutes apart at most, so they share the machine's load), the median over the rounds."""
    bare = [r["it_s"] for r in results["bare loop"]]
    bare_cpu = statistics.median(r["cpu_ms"] for r in results["bare loop"])
    rows = ["| loop | it/s (median) | it/s per round | overhead per round | overhead (median) | CPU ms/step "
            "(median) | CPU overhead | values trained |", "|---|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        rates, cpu = [r["it_s"] for r in runs], statistics.median(r["cpu_ms"] for r in runs)
        costs = [b / r - 1 for b, r in zip(bare, rates)]
        each, median, cpu_cost = ("-", "-", "-") if name == "bare loop" else (
            ", ".join(f"{x * 100:+.1f} %" for x in costs), f"{statistics.median(costs) * 100:+.1f} %",
            f"{(cpu / bare_cpu - 1) * 100:+.1f} %")
        rows.append(f"| {name} | {statistics.median(rates):.2f} | {', '.join(f'{x:.2f}' for x in rates)} | {each} | "
                    f"{median} | {cpu:.1f} | {cpu_cost} | {runs[0]['trained_values']} |")
    return "\n".join(rows)


def threads_table(cases: dict[str, dict]) -> str:
    rows = ["| torch threads, machine | it/s | s/step | load average after |", "|---|---|---|---|"]
    for name, result in cases.items():
        rows.append(f"| {name} | {result['it_s']:.2f} | {1 / result['it_s']:.3f} | {result['load']:.2f} |")
    return "\n".join(rows)


def document(command: str, threads: int, steps: int, overhead_md: str, threads_md: str, thread_steps: int,
             loads: tuple[float, float]) -> str:
    return f"""# Loop overhead and threads

Measured with `bench/loop_overhead.py` on {datetime.date.today().isoformat()}.

- Command: `{command}`
- Machine: {machine(False)}; load average (1 min) before / after: {loads[0]:.2f} / {loads[1]:.2f}

## Danlu's loop against a bare loop

{steps} steps per run, OMP_NUM_THREADS={threads} for every run; it/s = 1 / the median step time, the first
{WARMUP_STEPS} steps left out.

{overhead_md}

The bare loop is the least a LoRA step can do (bench/loop_overhead.py, `bare_loop`): cached latents and
text-encoder outputs, noise, the UNet forward and backward, gradient clipping, AdamW, one loss readback; no
data loading, no logging. Danlu's loop does the same work (the same LoRA size: "values trained") plus building
each batch from the latent and text caches (ahead, on a thread), the loss weighting, the schedule, the
non-finite check, the health monitor and its events.jsonl and TensorBoard records. Overhead = bare it/s /
Danlu it/s - 1 within a round (the runs of a round share the machine's load), the median over the rounds.
CPU ms/step is the processor time the process spent per step (all its threads, so the batches built ahead
count too), the median over the runs: other work on the machine delays a step's wall time far more than its
CPU time, so on a shared machine the CPU overhead is the figure to read. On this tiny model a step is tens of
milliseconds, so a fixed cost per step weighs far more than with a real model, where the UNet takes most of a
second.

## Threads on a shared CPU

Danlu's loop, {thread_steps} steps, with 2 and with 1 torch threads (OMP_NUM_THREADS), on the machine as it
is and with one more core kept busy by a pure Python loop beside it, as a test run or a second training would.

{threads_md}

torch's threads wait for each other at the end of every operation, so when one of them loses its core every
operation waits for it. Danlu therefore leaves one core free: torch threads = usable cores - 1, at least 1, at
most torch's default (trainer/training/speed.py); OMP_NUM_THREADS, when set, is used as it is.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per overhead run")
    parser.add_argument("--rounds", type=int, default=3, help="turns of the bare and Danlu runs")
    parser.add_argument("--thread-steps", type=int, default=40, help="steps per thread case (0: skip them)")
    parser.add_argument("--repo", action="append", help="a checkout whose loop to measure (default: this one)")
    parser.add_argument("--out", type=Path, help="write the figures as markdown here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measurement (JSON spec) in this process
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(json.loads(args.one))))
        return
    from trainer.demo.data import build_demo_dataset
    from trainer.families.tiny_sd import build_tiny_sd
    from trainer.training.speed import cpu_threads

    cores = len(os.sched_getaffinity(0))
    threads = int(os.environ.get("OMP_NUM_THREADS") or cpu_threads(cores, cores))  # what a Danlu run picks
    repos = [str(Path(repo).resolve()) for repo in args.repo or [REPO]]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="danlu-overhead-") as tmp:
        root = Path(tmp)
        model, data = build_tiny_sd(root / "model", "sd1"), build_demo_dataset(root / "data")
        overhead_md = overhead_table(overhead(root, model, data, repos, args.steps, args.rounds, threads))
        threads_md = threads_table(thread_cases(root, model, data, args.thread_steps)) if args.thread_steps else ""
    print(overhead_md + "\n\n" + threads_md)
    if args.out:
        command = " ".join([os.path.relpath(sys.executable, REPO), "bench/loop_overhead.py", *sys.argv[1:]])
        args.out.write_text(document(command, threads, args.steps, overhead_md, threads_md, args.thread_steps,
                                     (load_before, os.getloadavg()[0])), encoding="utf-8")
        print(f"written: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
