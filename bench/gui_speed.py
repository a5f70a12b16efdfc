"""How fast the page answers a user: a tab switch, a language switch and Check config, in headless Chromium.

    .venv/bin/python bench/gui_speed.py [--repo DIR] [--rounds 5] [--port N]

Starts `python app.py` from --repo (default: this checkout; a clean copy of another commit works too, e.g.
`git archive HEAD | tar -x -C /tmp/before`) with a fresh DANLU_HOME, so the page opens with the demo, and drives
Debian's /usr/bin/chromium through Playwright as a user does. Each figure is the time from the click until the
page shows the answer: the tab's content visible, the other language's help text at a field of another tab, the
Check message. Printed per round and as the median. Figures and the command: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
START_TIMEOUT_S = 300
TABS = {"paths": {"en": "Paths", "zh": "路径"}, "steps": {"en": "Steps", "zh": "步数"},
        "effect": {"en": "Model effect", "zh": "模型效果"}, "run": {"en": "Run", "zh": "运行"}}
# What each language's page shows at network_dim (Model effect tab): the switch is done when it shows.
RANK_HELP = {"en": "LoRA rank", "zh": "LoRA 的秩"}


def start_app(repo: Path, home: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "DANLU_HOME": str(home), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    app = subprocess.Popen([sys.executable, "app.py", "--no-browser", "--port", str(port), "--lang", "en"], cwd=repo,
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if app.poll() is not None:
            raise RuntimeError(f"app.py ended with exit status {app.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).close()
            return app
        except OSError:
            time.sleep(0.5)
    app.terminate()
    raise RuntimeError(f"app.py did not answer within {START_TIMEOUT_S} s")


def timed(action, done) -> float:
    began = time.perf_counter()
    action()
    done()
    return time.perf_counter() - began


def tab_switch(tab, lang: str, tab_id: str) -> float:
    panel = tab.locator(f"#tab-{tab_id}")
    return timed(lambda: tab.get_by_role("tab", name=TABS[tab_id][lang], exact=True).click(),
                 lambda: panel.locator(".danlu-field").first.wait_for(state="visible"))


def lang_switch(tab, lang: str) -> float:
    label = {"zh": "中文", "en": "English"}[lang]
    return timed(lambda: tab.locator("#lang").get_by_text(label).click(),
                 lambda: tab.wait_for_function(
                     "([text]) => document.querySelector('#network_dim')?.textContent.includes(text)",
                     arg=[RANK_HELP[lang]]))


def check_config(tab) -> float:
    tab.evaluate("() => { const m = document.querySelector('#message'); if (m) m.dataset.bench = m.innerText; }")
    return timed(lambda: tab.locator("#check").first.click(),
                 lambda: tab.wait_for_function(
                     "() => { const m = document.querySelector('#message');"
                     " return m && m.innerText.trim() && m.innerText !== m.dataset.bench; }"))


def measure(url: str, rounds: int) -> dict[str, list[float]]:
    """`rounds` of each action on the idle page, then as many while the demo trains (the CPU is shared)."""
    figures: dict[str, list[float]] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
        tab.set_default_timeout(60_000)
        tab.goto(url)
        tab.locator("#family").filter(has_text="SD1.x").wait_for()
        lang = run_rounds(tab, rounds, "en", figures, "idle")  # a fresh DANLU_HOME: the page starts in English
        start_training(tab, lang)
        try:
            run_rounds(tab, rounds, lang, figures, "training")
        finally:
            tab.locator("#stop").first.click()
            tab.locator(".danlu-progress[data-status='stopped']").wait_for(timeout=180_000)
        browser.close()
    return figures


def run_rounds(tab, rounds: int, lang: str, figures: dict[str, list[float]], when: str) -> str:
    for _ in range(rounds):
        for tab_id in ("steps", "effect", "paths", "run"):  # ends on Run, where Check is
            figures.setdefault(f"tab switch, {when}", []).append(tab_switch(tab, lang, tab_id))
        figures.setdefault(f"check config, {when}", []).append(check_config(tab))
        lang = "zh" if lang == "en" else "en"
        figures.setdefault(f"language switch, {when}", []).append(lang_switch(tab, lang))
        print(lang, {name: round(values[-1], 2) for name, values in figures.items()}, flush=True)
    return lang


def start_training(tab, lang: str) -> None:
    """The demo with many epochs, started from the Run tab; returns once it made a step."""
    tab.get_by_role("tab", name=TABS["steps"][lang], exact=True).click()
    box = tab.locator("#max_train_epochs input")
    box.fill("1000")
    box.press("Tab")
    tab.get_by_role("tab", name=TABS["run"][lang], exact=True).click()
    tab.locator("#start").first.click()
    tab.wait_for_function("() => Number(document.querySelector('.danlu-progress')?.dataset.step || 0) >= 1",
                          timeout=300_000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose app.py runs")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    port = args.port or _free_port()
    with tempfile.TemporaryDirectory(prefix="danlu-gui-speed-") as home:
        app = start_app(args.repo.resolve(), Path(home), port)
        try:
            figures = measure(f"http://127.0.0.1:{port}/", args.rounds)
        finally:
            os.killpg(app.pid, 15)
            app.wait(30)
    for name, values in figures.items():
        shown = " ".join(f"{v:.2f}" for v in values)
        print(f"{name:26s} median {statistics.median(values):6.2f} s  max {max(values):6.2f} s  ({shown})")
    return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
