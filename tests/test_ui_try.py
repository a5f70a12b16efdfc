"""The Try tab in a real headless Chromium (the fixtures of tests/test_ui_browser.py): a 2x2 grid of the demo run
(strength 0 and 1 x its two epoch files), rendered by the GUI's try server, shown with its table; the grid PNG and
its JSON on disk, and a second render of the same settings gives the same pixels on the model kept loaded."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from test_ui_browser import REPO, browser, fill, gui, open_tab, page, shot  # noqa: F401  (fixtures)

PROMPT = "red circle, on white background --w 64 --h 64 --s 6 --l 5"


def _demo_run(home: Path) -> Path:
    """The demo trained for 2 epochs, a file each epoch, into a run folder under the form's output_dir."""
    demo = home / "demo"
    config = yaml.safe_load((demo / "config.yaml").read_text(encoding="utf-8"))
    config.update(max_train_epochs=2, save_every_n_epochs=1, sample_every_n_epochs=None, sample_at_first=False)
    path = home / "try-demo.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    run = Path(config["output_dir"]) / "runs" / "20260101-000000"
    done = subprocess.run([sys.executable, "-m", "trainer", "train", str(path), "--run-dir", str(run)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def _grids(run: Path) -> list[Path]:
    return sorted(path.parent for path in run.glob("try/*/grid.json"))


def _wait_for_grids(run: Path, count: int, timeout_s: float = 300) -> list[Path]:
    deadline = time.monotonic() + timeout_s
    while len(_grids(run)) < count and time.monotonic() < deadline:
        time.sleep(0.5)
    return _grids(run)


def test_a_two_by_two_grid_of_the_demo_run(page, gui):  # noqa: F811
    run = _demo_run(gui[1])
    open_tab(page, "Try")
    fill(page, "try-run", str(run))
    page.click("#try-use-run")
    page.wait_for_function("() => document.querySelector('#try-files textarea')?.value.includes('demo_lora-000001')")
    assert page.locator("#try-base input, #try-base textarea").first.input_value().endswith("model")
    fill(page, "try-prompts", PROMPT)
    fill(page, "try-strengths", "0, 1")
    fill(page, "try-seeds", "1")
    page.click("#try-start")
    page.locator("#message").filter(has_text="Rendering 4 cells").wait_for()
    page.locator("#try-status").filter(has_text="Completed: 4 of 4 cells").wait_for(timeout=300_000)
    grid = page.locator("#try-grid table")
    assert grid.locator("img").count() == 4
    assert "epoch 1" in grid.inner_text() and "final" in grid.inner_text() and "strength 1" in grid.inner_text()
    table = page.locator("#try-table")
    table.filter(has_text="seed spread").wait_for()
    assert "demo_lora" in table.inner_text()
    page.locator("#try-png").scroll_into_view_if_needed()  # the picture loads lazily, once in view
    page.locator("#try-png img").wait_for()
    shot(page, "try-grid", full_page=True)
    (first,) = _grids(run)
    record = json.loads((first / "grid.json").read_text(encoding="utf-8"))
    assert record["status"] == "completed" and len(record["cells"]) == 4
    assert [row["effect"] for row in record["summary"] if row["strength"] == 0] == [0.0, 0.0]
    page.click("#try-start")  # the same settings again: the same pixels
    page.locator("#message").filter(has_text="Rendering 4 cells").wait_for()
    first, second = _wait_for_grids(run, 2)
    page.locator("#try-status").filter(has_text=second.name).filter(has_text="Completed: 4 of 4 cells").wait_for()
    assert np.array_equal(np.asarray(Image.open(first / "grid.png")), np.asarray(Image.open(second / "grid.png")))
    assert json.loads((second / "grid.json").read_text(encoding="utf-8"))["settings"] == record["settings"]
    plans = [next(json.loads(line) for line in (grid / "progress.jsonl").read_text("utf-8").splitlines()
                  if '"plan"' in line) for grid in (first, second)]
    assert [plan["model_kept"] for plan in plans] == [False, True]  # the second grid found the model loaded
