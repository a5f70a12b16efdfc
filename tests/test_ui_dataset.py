"""The Dataset tab in a real headless Chromium (the fixtures of tests/test_ui_browser.py), on the demo dataset the
form starts with: tag it with a tiny WD14 model built locally (tests/tagging_helpers.py; the `caption` child runs
it), edit one caption, apply a bulk edit and undo it; the image checks, the Paths tab's dataset check and the Steps
tab's plan follow each change, and the tab follows the language switch."""

from __future__ import annotations

import shutil

from test_ui_browser import browser, fill, gui, open_tab, page, pytestmark, shot  # noqa: F401  (fixtures)

from tests.tagging_helpers import tiny_wd14


def test_tag_edit_and_undo_on_the_dataset_tab(page, gui, tmp_path):  # noqa: F811
    train = gui[1] / "demo" / "data" / "train"
    model = tiny_wd14(tmp_path / "tiny tagger 模型")
    page.locator("#dataset-report").filter(has_text="5/6").wait_for()  # circle_05 has no caption
    # A copy of a picture added by hand, without a caption: the image checks name it, and the first operation's
    # review finds it (the Steps tab's plan counts 7 circles).
    shutil.copy(train / "5_circle" / "circle_00.png", train / "5_circle" / "circle_06.png")
    open_tab(page, "Dataset")
    page.locator("#ds-gallery img").nth(10).wait_for()
    assert "5_circle" in page.locator("#ds-folders").inner_text()
    page.locator("#ds-checks").filter(has_text="is the same file as circle_00.png").wait_for()

    fill(page, "ds-model", str(model))
    fill(page, "ds-first", "zkz")
    page.click("#ds-start")
    page.locator("#ds-tag-status").filter(has_text="Done: 3 captions written, 8 kept").wait_for()
    assert (train / "5_circle" / "circle_06.txt").read_text(encoding="utf-8").startswith("zkz, ")
    assert "long hair" in (train / "3_square" / "square_03.txt").read_text(encoding="utf-8")
    page.locator("#ds-frequency").filter(has_text="long hair").wait_for()
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "dataset-tab")
    open_tab(page, "Paths")
    page.locator("#dataset-report").filter(has_text="7/7").wait_for()
    open_tab(page, "Steps")
    page.locator("#plan").filter(has_text="5_circle: 7 images × 5 repeats = 35").wait_for()

    open_tab(page, "Dataset")
    page.locator("#ds-gallery img").first.click()
    page.locator("#ds-editing").filter(has_text="square_00.txt").wait_for()
    fill(page, "ds-caption", "zkz, 手写的标注, red square")
    page.click("#ds-save")
    page.locator("#ds-editor-status").filter(has_text="Saved 3_square/square_00.txt").wait_for()
    square = train / "3_square" / "square_00.txt"
    assert square.read_text(encoding="utf-8") == "zkz, 手写的标注, red square"

    page.locator("#ds-frequency").filter(has_text="手写的标注").wait_for()  # the views read the folder again
    page.locator("#ds-frequency").get_by_text("zkz", exact=True).first.click()  # a tag clicked joins the tags to remove
    page.wait_for_function("document.querySelector('#ds-edit-remove textarea, #ds-edit-remove input')?.value == 'zkz'")
    page.click("#ds-preview")
    page.locator("#ds-edit-status").filter(has_text="4 captions would change").wait_for()
    assert "手写的标注, red square" in page.locator("#ds-changes").inner_text()
    assert square.read_text(encoding="utf-8").startswith("zkz")  # a preview writes nothing
    page.click("#ds-apply")
    page.locator("#ds-edit-status").filter(has_text="4 captions changed").wait_for()
    assert square.read_text(encoding="utf-8") == "手写的标注, red square"
    page.click("#ds-undo")
    page.locator("#ds-edit-status").filter(has_text="4 captions restored").wait_for()
    assert square.read_text(encoding="utf-8") == "zkz, 手写的标注, red square"
    page.locator("#lang").get_by_text("中文").click()  # the tab's words and views follow the language
    page.locator("#ds-folders").filter(has_text="重复次数").wait_for()
    page.get_by_role("button", name="开始打标").wait_for()
