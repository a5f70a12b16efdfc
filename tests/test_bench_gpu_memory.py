"""bench/gpu_memory.py's dry mode: the GPU memory and speed bench runs a shipped preset, with a row's overrides, end
to end on a tiny model on the CPU (random weights from the configs, synthetic images, the preview checked, the
forward FLOPs counted), so it is ready when a GPU is lent."""

import json
import subprocess
import sys

from trainer.common.paths import REPO


def test_the_dry_run_trains_a_preset_and_reports_its_figures(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_memory.py"), "--tiny", "--out", str(tmp_path),
                           "--presets", "flux-dev-12gb", "--steps", "5", "--set", "network_dim=8", "--label",
                           "flux r8"], capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    [result] = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert result["status"] == "completed" and result["steps"] == 5 and result["losses_finite"]
    assert result["s_per_it"] > 0 and result["preview_black"] is False and result["estimate_gib"] > 0
    assert result["forward_flops"] > 0  # the FLOP count MFU is made of (MFU itself needs a GPU's peak)
    assert "| flux r8 | 12 GB | completed |" in (tmp_path / "results.md").read_text(encoding="utf-8")
