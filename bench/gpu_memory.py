"""Peak GPU memory and speed of the shipped presets, each on its family's full-size model with random weights,
capped at the card size the preset names; the memory estimate (`check`) beside each measurement.
docs/benchmarks-gpu.md records the figures.

    python bench/gpu_memory.py --out OUT [--presets flux-dev-12gb,sdxl-character-12gb] [--steps 12]
    python bench/gpu_memory.py --tiny --out OUT    # dry run: the tiny models on the CPU, a few steps
    python bench/gpu_memory.py --out OUT --presets sdxl-character-24gb --set train_batch_size=4 --no-cap \
        --label "sdxl b4" --steps 30              # one of bench/gpu_speed.sh's rows

Each preset runs in a child process of its own (clean CUDA memory and peak counters). The model is the shipped
configuration of its family (trainer/families/configs/) built on the GPU with random weights, then handed to the
training as if loaded from a folder (no weights file, no download); the tokenizers are the tiny local ones (token
ids are all the models need). The dataset is a few synthetic images at the preset's resolution. The GPU is capped
with torch.cuda.set_per_process_memory_fraction at the preset's vram_gb; a preset that does not fit shows as
out of memory. Needs diffusers (and bitsandbytes for 8-bit optimizers) besides torch/transformers/peft/accelerate.

MFU: the denoiser's forward FLOPs are counted once (torch.utils.flop_counter on a repeat of one step's forward);
a LoRA step's model FLOPs are taken as twice that (the forward, and the backward to the inputs: the frozen
weights take no gradient; a checkpointed forward's recompute is not counted), over the median step time and the
GPU's dense bf16 peak (PEAK_BF16 or --peak-tflops).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # tests/: the tiny Flux builder

FIRST_TIMED_STEP = 5  # s/it is the median from this step on: the first ones warm the allocator, compile kernels
IMAGES = 4
COUNTED_STEP = 2  # the step whose denoiser forward is repeated under the FLOP counter (excluded from the median)
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "RTX 4090": 165e12,
             "RTX 3090": 71e12}  # dense bf16 tensor-core FLOP/s by name fragment (vendor datasheets)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for results.json and results.md (required)")
    parser.add_argument("--presets", help="comma-separated preset names (default: every one that names a card)")
    parser.add_argument("--steps", type=int, default=12, help="training steps per preset")
    parser.add_argument("--tiny", action="store_true", help="dry run on the CPU with the tiny models")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per preset")
    parser.add_argument("--first-step", type=int, default=FIRST_TIMED_STEP,
                        help="s/it is the median duration of this step and the later ones")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config value over the preset's (YAML value), e.g. train_batch_size=4; repeatable")
    parser.add_argument("--label", help="the row's name in the table (default: the preset)")
    parser.add_argument("--no-cap", action="store_true", help="the whole GPU instead of the preset's card size")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, when PEAK_BF16 lacks it")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child: run this preset, print one JSON line
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args)), flush=True)
        return 0
    if args.out is None:
        parser.error("--out is required")
    args.out.mkdir(parents=True, exist_ok=True)
    results = [run_child(name, args) for name in preset_names(args.presets)]
    (args.out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    (args.out / "results.md").write_text(table(results), encoding="utf-8")
    print(table(results))
    return 0 if all(result.get("status") == "completed" for result in results) else 1


def preset_names(chosen: str | None) -> list[str]:
    from trainer.presets.format import read_preset
    from trainer.presets.library import SHIPPED_DIR

    named = [path.stem for path in sorted(SHIPPED_DIR.glob("*.yaml")) if read_preset(path).vram_gb]
    return chosen.split(",") if chosen else named


def run_child(name: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--one", name, "--steps", str(args.steps), "--first-step",
               str(args.first_step), *(["--tiny"] if args.tiny else []),
               *(["--no-cap"] if args.no_cap else []), *[f"--set={item}" for item in args.set],
               *([f"--peak-tflops={args.peak_tflops}"] if args.peak_tflops else [])]
    started = time.time()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"preset": name, "status": f"timed out after {args.timeout} s"}
    label = args.label or name
    (args.out / f"{label.replace(' ', '_')}.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"preset": label, "status": f"failed: {tail}", "wall_s": round(time.time() - started, 1)}
    return {**json.loads(lines[-1][len("RESULT "):]), "preset": label, "wall_s": round(time.time() - started, 1)}


# --- one preset, in its own process ----------------------------------------------------------------------
def run_one(name: str, args: argparse.Namespace) -> dict:
    import torch
    import yaml

    from trainer.checks.memory import estimate
    from trainer.config.io import validate_config
    from trainer.presets.format import apply_preset, read_preset
    from trainer.presets.library import SHIPPED_DIR
    from trainer.training.loop import train

    steps, tiny = args.steps, args.tiny
    preset = read_preset(SHIPPED_DIR / f"{name}.yaml")
    cuda = torch.cuda.is_available() and not tiny
    root = Path(tempfile.mkdtemp(prefix=f"danlu-{name}-"))
    config, _ = apply_preset(preset, {"pretrained_model_name_or_path": str(model_folder(preset.model_family, root,
                                                                                          tiny)),
                                      "train_data_dir": str(root / "data"), "output_dir": str(root / "out")})
    overrides = {key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in args.set)}
    config = validate_config({**config, **overrides, **run_settings({**config, **overrides}, steps, tiny, cuda)})
    write_images(root / "data" / "1_bench", config.resolution_wh, IMAGES)
    use_random_weights("cuda" if cuda else "cpu")
    if cuda and not args.no_cap:
        torch.cuda.set_per_process_memory_fraction(min(1.0, preset.vram_gb * 2**30 /
                                                       torch.cuda.get_device_properties(0).total_memory))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    flops = count_forward_flops()
    status = _train(train, config, root / "run")
    result = {"preset": name, "status": status, "family": preset.model_family, "card_gb": preset.vram_gb,
              "estimate_gib": round(estimate(config, preset.model_family).peak_gib, 2),
              **run_figures(root / "run", args.first_step)}
    result["forward_flops"] = int(flops[0]) if flops else None
    if cuda:
        result |= {"peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                   "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
                   "gpu": torch.cuda.get_device_name(0)}
        peak = args.peak_tflops * 1e12 if args.peak_tflops else next(
            (value for key, value in PEAK_BF16.items() if key in result["gpu"]), None)
        if flops and peak and result.get("s_per_it"):
            result["mfu"] = round(2 * flops[0] / result["s_per_it"] / peak, 3)
    shutil.rmtree(root, ignore_errors=True)
    return result


def count_forward_flops() -> list[float]:
    """Repeat the denoiser's forward of step COUNTED_STEP under torch's FLOP counter (no gradients); the list
    receives the count. The repeat costs that step time, which the median leaves out."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from trainer.training.loop import Trainer

    counted: list[float] = []
    original = Trainer._forward_backward

    def forward_backward(self, data, batch):
        if self.step == COUNTED_STEP and not counted:
            denoiser = self.model.denoiser

            def count(module, args, kwargs):
                denoiser_hook.remove()
                with torch.no_grad(), FlopCounterMode(display=False) as counter:
                    module(*args, **kwargs)
                counted.append(float(counter.get_total_flops()))

            denoiser_hook = denoiser.register_forward_pre_hook(count, with_kwargs=True)
        return original(self, data, batch)

    Trainer._forward_backward = forward_backward
    return counted


def _train(train, config, run_dir: Path) -> str:
    import torch

    try:
        return train(config, run_dir)
    except torch.OutOfMemoryError:
        return "out of memory"


def run_settings(config: dict, steps: int, tiny: bool, cuda: bool) -> dict:
    """The bench's own settings: a fixed number of steps, one preview at the end, nothing saved before it."""
    from trainer.config.schema.base import parse_resolution

    width, height = (64, 64) if tiny else parse_resolution(config["resolution"])
    settings = {"max_train_steps": steps, "max_train_epochs": None, "save_every_n_epochs": None,
                "sample_every_n_epochs": None, "sample_every_n_steps": steps, "sample_at_first": False,
                "sample_prompts": [f"a red circle --w {width} --h {height} --s 4"],
                "cache_latents_to_disk": False, "cache_text_encoder_outputs_to_disk": False}
    if tiny:  # what a CPU run of a tiny model needs instead (as tests/test_shipped_presets.py)
        settings |= {"resolution": "64,64", "bucket_reso_steps": 16, "min_bucket_reso": 64, "max_bucket_reso": 128,
                     "max_data_loader_n_workers": 0, "blocks_to_swap": None}
    if not cuda and config.get("mixed_precision") == "fp16":
        settings["mixed_precision"] = "no"
    return settings


def model_folder(family: str, root: Path, tiny: bool) -> Path:
    """A diffusers folder of the family: the tiny model, or the shipped full-size configs with its tokenizers."""
    from tiny_flux import build_tiny_flux

    from trainer.families.loading import SHIPPED_CONFIGS
    from trainer.families.table import FAMILIES
    from trainer.families.tiny_sd import build_tiny_sd, build_tiny_sdxl

    tiny_dir = root / "tiny"
    {"sd1": lambda: build_tiny_sd(tiny_dir, "sd1"), "sdxl": lambda: build_tiny_sdxl(tiny_dir),
     "flux": lambda: build_tiny_flux(tiny_dir, "dev")}[family]()
    if tiny:
        return tiny_dir
    full = root / "full"
    shutil.copytree(SHIPPED_CONFIGS / FAMILIES[family].shipped_configs[0], full)
    for tokenizer in tiny_dir.glob("tokenizer*"):
        shutil.copytree(tokenizer, full / tokenizer.name)
    return full


def use_random_weights(device: str) -> None:
    """Components come from their configs, built with random weights on `device` (fast on a GPU), then handed to
    the training on the CPU in the load precision, where a loaded model would be."""
    import torch

    from trainer.families import loading

    def random_component(source: str, name: str, family: str, dtype: torch.dtype):
        cls = loading.component_class(family, name)
        with torch.device(device):
            model = (cls(cls.config_class.from_pretrained(source, subfolder=name)) if name.startswith("text_encoder")
                     else cls.from_config(cls.load_config(source, subfolder=name)))
        model = model.to(dtype).to("cpu").eval()
        if device == "cuda":
            torch.cuda.empty_cache()
        return model

    loading._load_from_folder = random_component


def write_images(folder: Path, size: tuple[int, int], count: int) -> None:
    """Coloured noise with a caption each: the content does not matter, the size does."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")
        (folder / f"{index}.txt").write_text(f"bench image {index}, a red circle", encoding="utf-8")


def steady_s_per_it(step_ends: list[float], first_step: int) -> float | None:
    """The median duration of steps first_step, first_step + 1, ... (step_ends: when each step ended, step 1's
    first; step k lasted step_ends[k - 1] - step_ends[k - 2]); None when the run ended before."""
    durations = [step_ends[k - 1] - step_ends[k - 2] for k in range(max(first_step, 2), len(step_ends) + 1)]
    return round(statistics.median(durations), 3) if durations else None


def run_figures(run_dir: Path, first_step: int) -> dict:
    """s/it (steady_s_per_it), the losses' finiteness and the preview's brightness."""
    import numpy as np
    from PIL import Image

    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    times = [event["t"] for event in events if event["type"] == "step"]
    losses = [event["loss"] for event in events if event["type"] == "step"]
    samples = sorted((run_dir / "samples").glob("*.png"))
    preview = np.asarray(Image.open(samples[-1]).convert("L")) if samples else None
    return {"steps": len(times), "s_per_it": steady_s_per_it(times, first_step),
            "losses_finite": bool(losses) and all(np.isfinite(losses)),
            "preview_max": int(preview.max()) if preview is not None else None,
            "preview_black": preview is not None and int(preview.max()) < 10}


def table(results: list[dict]) -> str:
    head = ("| run | card | status | estimate GiB | peak allocated GiB | peak reserved GiB | s/it | MFU | "
            "losses finite | preview |\n|---|---|---|---|---|---|---|---|---|---|\n")
    rows = [f"| {r['preset']} | {str(r['card_gb']) + ' GB' if r.get('card_gb') else '-'} | {r['status']} | "
            f"{r.get('estimate_gib', '-')} | {r.get('peak_allocated_gib', '-')} | {r.get('peak_reserved_gib', '-')} | "
            f"{r.get('s_per_it', '-')} | {r.get('mfu', '-')} | {r.get('losses_finite', '-')} | "
            f"{'-' if r.get('preview_max') is None else 'black' if r['preview_black'] else 'ok'} |" for r in results]
    return head + "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.exit(main())
