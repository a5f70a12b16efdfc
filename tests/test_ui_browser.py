"""The GUI in a real headless Chromium (Debian's chromium, driven by Playwright): the form and its plan, a training
started, watched, reloaded and stopped, field errors and the language switch.

The app runs as users start it (`python app.py`), with DANLU_HOME in a temporary folder so it starts from the demo.
Screenshots go to test-artifacts/screenshots (or $DANLU_SCREENSHOTS); docs/quickstart*.md show some of them.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]
SHOTS = Path(os.environ.get("DANLU_SCREENSHOTS") or REPO / "test-artifacts" / "screenshots")
START_TIMEOUT_S = 240  # the first start builds the demo model and dataset
UI_TIMEOUT_MS = 60_000

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run does it)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"app.py did not answer within {START_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def gui(tmp_path_factory):
    """A running `python app.py` with its own DANLU_HOME; yields (url, home)."""
    home = tmp_path_factory.mktemp("danlu_home")
    port = _free_port()
    log = home / "app.log"
    env = {**os.environ, "DANLU_HOME": str(home), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "wb") as output:
        process = subprocess.Popen([sys.executable, "app.py", "--no-browser", "--port", str(port), "--lang", "en"],
                                   cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_http(url, process, log)
        yield url, home
    finally:
        process.terminate()
        process.wait(30)
        for sweep in home.glob("demo/outputs/sweeps/*"):  # a queue outlives the GUI by design: end it here
            (sweep / "STOP").touch()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, gui):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    tab = context.new_page()
    tab.set_default_timeout(UI_TIMEOUT_MS)
    tab.goto(gui[0])
    tab.locator("#family").filter(has_text="SD1.x").wait_for()  # the form is filled and reviewed once
    yield tab
    context.close()


def shot(tab, name: str, full_page: bool = False) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


def fill(tab, key: str, value: str) -> None:
    """Type into a field's input (text, number) and leave it, as a user does."""
    box = tab.locator(f"#{key} textarea, #{key} input").first
    box.fill(value)
    box.press("Tab")


def open_tab(tab, name: str) -> None:
    tab.get_by_role("tab", name=name).click()


def demo_paths(home: Path) -> dict[str, str]:
    demo = home / "demo"
    return {"pretrained_model_name_or_path": str(demo / "model"), "train_data_dir": str(demo / "data" / "train")}


def test_form_shows_the_plan_that_check_prints(page, gui):
    url, home = gui
    for key, value in demo_paths(home).items():
        fill(page, key, value)
    page.wait_for_selector("#family:has-text('SD1.x')")
    open_tab(page, "Steps")
    fill(page, "max_train_epochs", "7")
    plan = page.locator("#plan")
    plan.filter(has_text="total steps = 7 epochs").wait_for()
    shot(page, "steps-plan")
    config = home / "check.yaml"
    config.write_text((home / "demo" / "config.yaml").read_text().replace("max_train_epochs: 10",
                                                                          "max_train_epochs: 7"))
    check = subprocess.run([sys.executable, "-m", "trainer", "check", str(config)], cwd=REPO, capture_output=True,
                           text=True, timeout=300)
    assert check.returncode == 0, check.stderr
    printed = [line for line in check.stdout.splitlines() if re.match(r"^(\w.*: \d+ images|buckets|batches|steps|total)",
                                                                        line)]
    shown = plan.inner_text()
    assert printed and all(line in shown for line in printed), (printed, shown)


def test_bad_dataset_path_is_shown_at_its_field_and_language_switch(page, gui):
    open_tab(page, "Paths")
    fill(page, "train_data_dir", "/no/such/folder")
    field = page.locator("#train_data_dir")
    page.wait_for_selector("#train_data_dir.danlu-invalid")
    assert "does not exist" in field.inner_text()
    shot(page, "paths-error")
    fill(page, "train_data_dir", demo_paths(gui[1])["train_data_dir"])
    page.wait_for_selector("#train_data_dir:not(.danlu-invalid)")
    browse = page.locator("#train_data_dir-browse")  # its folder icon is drawn, not an emoji some fonts lack
    assert "svg" in browse.evaluate("b => getComputedStyle(b, '::before').backgroundImage")
    assert not re.search(r"[\U0001F300-\U0001FAFF]", browse.inner_text())
    page.locator("#lang").get_by_text("中文").click()
    page.get_by_role("tab", name="路径").wait_for()
    assert page.get_by_role("tab", name="模型效果").is_visible()
    chinese = re.compile(r"[\u4e00-\u9fff]")
    line = page.locator("#run-line")
    # the bar follows (a poll answered just before the switch may show the old words for one poll, < 1 s) ...
    page.wait_for_function("() => /[\\u4e00-\\u9fff]/.test(document.querySelector('#run-line')?.innerText)",
                           timeout=5_000)
    page.wait_for_timeout(2_500)  # ... and stays: two polls later none has put the old language back
    assert chinese.search(line.inner_text()), line.inner_text()
    open_tab(page, "模型效果")
    assert "LoRA 的秩" in page.locator("#network_dim").inner_text()
    shot(page, "effect-zh")
    open_tab(page, "步数")
    page.locator("#plan").filter(has_text="总步数").wait_for()
    shot(page, "steps-zh")
    page.locator("#lang").get_by_text("English").click()
    page.get_by_role("tab", name="Model effect").wait_for()
    assert "LoRA rank" in page.locator("#network_dim").inner_text()


def _step(tab) -> int:
    return int(tab.locator(".danlu-progress").get_attribute("data-step") or 0)


def test_train_watch_reload_and_stop(page, gui):
    url, home = gui
    for key, value in demo_paths(home).items():
        fill(page, key, value)
    open_tab(page, "Steps")
    fill(page, "max_train_epochs", "400")
    fill(page, "save_every_n_epochs", "50")
    open_tab(page, "Run")
    fill(page, "sample_every_n_epochs", "1")
    page.click("#start")
    page.locator("#message").filter(has_text="Training started").wait_for()
    page.wait_for_function("() => Number(document.querySelector('.danlu-progress')?.dataset.step || 0) >= 3")
    page.locator("#samples img").first.wait_for()
    page.locator("#loss-chart canvas, #loss-chart svg").first.wait_for()
    shot(page, "run-training")
    before = _step(page)
    page.reload()
    page.get_by_role("tab", name="Run", selected=True).wait_for()  # a running training opens the Run tab
    page.wait_for_selector(".danlu-progress")
    page.wait_for_function(f"() => Number(document.querySelector('.danlu-progress')?.dataset.step || 0) > {before}")
    assert page.locator("#start").is_disabled()  # a second start while one runs is not offered
    page.click("#stop")
    page.locator("#message").filter(has_text="Stopped").wait_for(timeout=180_000)
    page.locator("#run-status").filter(has_text="Stopped").wait_for()
    saved = re.search(r"saved: (\S+\.safetensors)", page.locator("#message").inner_text())
    assert saved and Path(saved.group(1)).is_file()
    shot(page, "run-stopped")


def test_apply_a_shipped_preset(page, gui):
    open_tab(page, "Presets")
    page.locator("#preset-list input").click()
    page.get_by_role("option", name="SD1.5 character (shipped)").click()
    page.locator("#preset-about").filter(has_text="trigger word").wait_for()
    page.click("#preset-apply")
    message = page.locator("#message")
    message.filter(has_text="field(s) changed").wait_for()
    message.get_by_text("field(s) changed").click()  # the list of changes unfolds
    assert "network_alpha" in message.inner_text() and "AdamW8bit" in message.inner_text()
    shot(page, "presets-applied")
    open_tab(page, "Model effect")
    assert page.locator("#network_alpha input").input_value() == "16"
    open_tab(page, "Paths")
    assert page.locator("#train_data_dir input").input_value() == demo_paths(gui[1])["train_data_dir"]


def test_lr_finder_suggests_and_applies_a_learning_rate(page, gui):
    open_tab(page, "Model effect")
    page.locator("#lr-finder").get_by_text("Learning-rate finder").click()
    fill(page, "lrf-steps", "20")
    page.click("#lrf-run")
    result = page.locator("#lrf-result")
    result.filter(has_text="levels off").wait_for(timeout=240_000)
    plateau = float(re.search(r"levels off at ([0-9][0-9.e+-]*[0-9])", result.inner_text()).group(1))
    assert plateau > 0
    adamw = float(re.search(r"AdamW unet_lr ([0-9][0-9.e+-]*[0-9])", result.inner_text()).group(1))
    assert adamw == pytest.approx(plateau, rel=0.01) or "Danlu warns that AdamW burns" in result.inner_text()
    shot(page, "lr-finder")
    page.click("#lrf-apply")
    page.locator("#message").filter(has_text="Applied for AdamW").wait_for()
    assert float(page.locator("#unet_lr input").input_value()) == pytest.approx(adamw, rel=0.01)


def test_a_two_variation_queue_makes_two_runs_and_a_compare_grid(page, gui):
    open_tab(page, "Steps")
    fill(page, "max_train_epochs", "2")
    open_tab(page, "Run")
    fill(page, "sample_every_n_epochs", "1")
    open_tab(page, "Compare")
    fill(page, "sweep-vary", "network_dim=4,8")
    page.click("#sweep-start")
    page.locator("#message").filter(has_text="Queue of 2 runs started").wait_for()
    queue = page.locator("#sweep-queue")
    page.wait_for_function("() => (document.querySelector('#sweep-queue')?.innerText.match(/Completed/g) || [])"
                           ".length === 2", timeout=600_000)
    assert "network_dim=4" in queue.inner_text() and "network_dim=8" in queue.inner_text()
    grid = page.locator("#compare-grid table")
    grid.wait_for()
    assert grid.locator("tr").count() == 3  # the epoch header, then one row per run
    assert grid.locator("img").count() >= 4  # two runs x at least two epochs, same prompt and seed
    page.wait_for_timeout(2000)  # the chart draws after its data arrives
    shot(page, "compare", full_page=True)
