"""The page as a whole in headless Chromium (issue 19): the bar with Start and Stop on every tab and their states,
live charts drawn during the first training and after a language switch, the browser tab's title, the Run tab
following output_dir, and the path pickers. One short demo training serves the run assertions.

The app and browser fixtures are those of tests/test_ui_browser.py (a `python app.py` with its own DANLU_HOME).
"""

from __future__ import annotations

import json
from pathlib import Path

from test_ui_browser import browser, demo_paths, fill, gui, open_tab, page, pytestmark, shot  # noqa: F401

# A drawn series: a line mark with a colour and at least this many points ("M x,y" then "L x,y" each).
MIN_POINTS = 5
CHART_LINES = """([chart, points]) => [...document.querySelectorAll(`${chart} path[aria-roledescription="line mark"]`)]
    .filter(p => p.getAttribute('stroke') && (p.getAttribute('d') || '').split('L').length >= points).length"""


def _drawn(tab, chart: str) -> int:
    return tab.evaluate(CHART_LINES, [chart, MIN_POINTS])


def _wait_drawn(tab, chart: str, lines: int) -> None:
    tab.wait_for_function(f"([chart, points]) => ({CHART_LINES})([chart, points]) >= {lines}", arg=[chart, MIN_POINTS])


def test_start_from_any_tab_live_charts_title_and_stop(page, gui):  # noqa: F811
    url, home = gui
    for key, value in demo_paths(home).items():
        fill(page, key, value)
    open_tab(page, "Steps")
    fill(page, "max_train_epochs", "400")
    fill(page, "save_every_n_epochs", "100")
    stop, start = page.locator("#stop"), page.locator("#start")
    page.locator("#run-line").filter(has_text="demo").wait_for()  # where to begin, before anything ran
    assert stop.is_disabled() and start.is_enabled()
    open_tab(page, "Paths")
    start.click()  # from the Paths tab: Start is in the bar under the header
    page.wait_for_function("() => document.title.includes('%')")  # the tab's title shows the progress
    assert stop.is_enabled() and start.is_disabled()
    open_tab(page, "Run")
    _wait_drawn(page, "#loss-chart", 2)  # raw and smoothed, drawn during the first training: no reload
    _wait_drawn(page, "#lr-run-chart", 1)
    legend = page.locator("#loss-chart").text_content()
    assert "smoothed" in legend and "loss" in legend  # the legend names both lines
    shot(page, "page-run-en")
    page.locator("#lang").get_by_text("中文").click()
    page.locator("#loss-chart").filter(has_text="平滑").wait_for()
    _wait_drawn(page, "#loss-chart", 2)  # the smoothed line survives the language switch
    page.wait_for_function("() => /^\\d+% · Danlu/.test(document.title)")
    shot(page, "page-run-zh")
    page.locator("#lang").get_by_text("English").click()
    page.get_by_role("tab", name="Run").wait_for()
    stop.click()
    page.locator("#run-status").filter(has_text="Stopped").wait_for(timeout=180_000)
    page.wait_for_function("() => document.title.startsWith('Stopped')")
    page.wait_for_function("() => document.querySelector('#stop').disabled")
    assert start.is_enabled()


def test_run_tab_shows_the_run_of_the_current_output_dir(page, tmp_path):  # noqa: F811
    earlier = tmp_path / "old out"
    run_dir = earlier / "runs" / "20260101-120000"
    run_dir.mkdir(parents=True)
    events = [{"type": "plan", "total_steps": 2, "steps_per_epoch": 1, "epochs": 2},
              {"type": "step", "step": 1, "epoch": 1, "loss": 0.5, "lr": 1e-4},
              {"type": "step", "step": 2, "epoch": 2, "loss": 0.4, "lr": 1e-4},
              {"type": "finished", "status": "completed"}]
    (run_dir / "events.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n", encoding="utf-8")
    open_tab(page, "Paths")
    fill(page, "output_dir", str(earlier))
    page.locator("#run-line").filter(has_text="Last run in this output folder").wait_for()
    open_tab(page, "Run")
    page.locator("#run-status").filter(has_text="20260101-120000").wait_for()
    open_tab(page, "Paths")
    fill(page, "output_dir", str(tmp_path / "新的 输出"))  # another folder: its (absent) runs, not the old one
    page.locator("#run-line").filter(has_text="No training in this output folder yet").wait_for()
    open_tab(page, "Run")
    page.locator("#run-status").filter(has_text="No training is running").wait_for()


def test_path_picker_opens_chinese_folders_and_fills_the_field(page, gui):  # noqa: F811
    url, home = gui
    dataset = Path(home) / "我的 数据"
    (dataset / "10_角色").mkdir(parents=True, exist_ok=True)
    open_tab(page, "Paths")
    fill(page, "train_data_dir", str(dataset / "10_角色"))  # the picker opens at the field's folder
    page.click("#train_data_dir-browse")
    folder = page.locator("#picker-folder :is(input, textarea)")
    page.wait_for_function("([want]) => document.querySelector('#picker-folder :is(input, textarea)')?.value === want",
                           arg=[str(dataset / "10_角色")])
    page.click("#picker-up")
    page.locator("#picker-entries").get_by_text("10_角色").wait_for()
    assert folder.input_value() == str(dataset)
    page.click("#picker-use")
    page.wait_for_function("([want]) => document.querySelector('#train_data_dir :is(input, textarea)')?.value === want",
                           arg=[str(dataset)])
    assert not page.locator("#picker-entries").is_visible()
    page.click("#ae-browse")  # a file field (Flux ae) lists files and has no "use this folder"
    page.locator("#picker-title").filter(has_text="Choose a file").wait_for()
    assert not page.locator("#picker-use").is_visible()
    page.click("#picker-cancel")
