"""What the page does behind its controls, in a real headless Chromium (issue 19): the LR finder runs with its
defaults, shows its progress and stops; a shipped preset keeps the user's paths and output_name; the demo's own
settings do not follow a user into their dataset; a repeat folder chosen as the dataset is one problem naming its
parent. The app, browser and helpers are test_ui_browser's."""

from __future__ import annotations

import shutil
from pathlib import Path

from test_ui_browser import browser, fill, gui, open_tab, page, shot  # noqa: F401  (fixtures used by name)


def my_repeat_folder(home: Path) -> Path:
    """A user's own dataset folder, 10_mychar (a copy of the demo's circles), under a Chinese path with a space."""
    mine = home / "我的 数据" / "10_mychar"
    mine.mkdir(parents=True, exist_ok=True)
    for picture in (home / "demo" / "data" / "train" / "5_circle").glob("*.png"):
        shutil.copy(picture, mine / picture.name)
    return mine


def test_lr_finder_runs_with_its_defaults_shows_progress_and_stops(page):  # noqa: F811
    open_tab(page, "Model effect")
    page.locator("#lr-finder").get_by_text("Learning-rate finder").click()
    steps = page.locator("#lrf-steps input")
    assert steps.input_value() == "0"  # automatic, and a valid value: no red border, no English toast
    assert page.locator("#lrf-stop").is_disabled()
    page.locator("#lrf-probe").get_by_text("Prodigy").click()  # the longer probe: time to press Stop
    page.click("#lrf-run")
    progress = page.locator("#lrf-progress .danlu-progress")
    progress.wait_for(timeout=120_000)
    page.wait_for_function("() => +document.querySelector('#lrf-progress .danlu-progress').dataset.step > 0",
                           timeout=120_000)
    assert "step" in progress.inner_text() and page.locator("#lrf-run").is_disabled()
    shot(page, "lr-finder-running")
    page.click("#lrf-stop")
    result = page.locator("#lrf-result")
    result.filter(has_text="levels off").wait_for(timeout=120_000)
    assert "Stopped at step" in result.inner_text()
    assert page.locator("#lrf-stop").is_disabled() and page.locator("#lrf-run").is_enabled()
    assert not page.locator(".toast-body").filter(has_text="minimum").count()


def test_the_demos_own_settings_do_not_follow_the_user_to_their_dataset(page, gui):  # noqa: F811
    """The page opens with the demo (max_bucket_reso 128 under a closed Advanced box); pointing train_data_dir at
    one's own images puts the demo's own settings back to their defaults, and the message lists them."""
    mine = my_repeat_folder(gui[1])
    open_tab(page, "Steps")
    page.locator("#group-image-advanced").get_by_text("Advanced").click()
    assert page.locator("#max_bucket_reso input").input_value() == "128"
    open_tab(page, "Paths")
    fill(page, "train_data_dir", str(mine.parent))
    message = page.locator("#message")
    message.filter(has_text="back to their defaults").wait_for()
    message.get_by_text("field(s) changed").click()
    assert "max_bucket_reso: 128 → 1024" in message.inner_text()
    open_tab(page, "Steps")
    assert page.locator("#max_bucket_reso input").input_value() == "1024"
    assert page.locator("#resolution input, #resolution textarea").first.input_value() == "512,512"
    shot(page, "demo-left")


def test_a_shipped_preset_keeps_the_users_paths_and_output_name(page, gui):  # noqa: F811
    fill(page, "output_name", "my_char")
    open_tab(page, "Presets")
    page.locator("#preset-list input").click()
    page.get_by_role("option", name="SD1.5 character (shipped)").click()
    page.click("#preset-apply")
    message = page.locator("#message")
    message.filter(has_text="field(s) changed").wait_for()
    message.get_by_text("field(s) changed").click()
    changes = message.inner_text().split("field(s) changed:", 1)[1]
    assert "output_name" not in changes and "network_alpha" in changes
    open_tab(page, "Paths")
    assert page.locator("#output_name input, #output_name textarea").first.input_value() == "my_char"


def test_a_repeat_folder_chosen_as_the_dataset_is_one_problem_naming_its_parent(page, gui):  # noqa: F811
    mine = my_repeat_folder(gui[1])
    open_tab(page, "Paths")
    fill(page, "train_data_dir", str(mine))
    page.wait_for_selector("#train_data_dir.danlu-invalid")
    assert "choose its parent folder" in page.locator("#train_data_dir").inner_text()
    report = page.locator("#dataset-report")
    page.wait_for_function("() => document.querySelector('#dataset-report').textContent.includes('repeat folder')")
    assert report.text_content().count("repeat folder itself") == 1
