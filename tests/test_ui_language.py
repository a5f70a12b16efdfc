"""The page in Chinese, in a real headless Chromium with an English locale (the hard case: Gradio's own words follow
the browser): a field error, the dataset check, an import and the upload box in Chinese; after a switch to English
no Chinese is left on the page; back in Chinese, Chinese again. Error text at a field is readable: its contrast
with the background, computed from the browser's styles, is at least WCAG AA's 4.5:1 in the light and dark themes.

The app and browser fixtures are tests/test_ui_browser.py's (one app per module, as users start it).
"""

from __future__ import annotations

import re
import time

import test_ui_browser as ui_browser
from test_ui_browser import demo_paths, fill, open_tab, shot

gui = ui_browser.gui  # fixtures: the running app.py, the browser, a tab on the page (English browser locale)
browser = ui_browser.browser
page = ui_browser.page

CJK = re.compile(r"[\u4e00-\u9fff]")
ENGLISH_PHRASE = re.compile(r"(?<![\w/.-])[A-Za-z]{2,}(?: [A-Za-z]{2,}){3,}(?![\w/.-])")
ALWAYS_BOTH = ("中文", "Language / 语言", "丹炉")  # the language switch and the brand name stay in both languages
WCAG_AA = 4.5

# The contrast of an element's text with the first opaque background behind it (WCAG 2 relative luminance).
CONTRAST_JS = """element => {
  const rgb = text => text.match(/[\\d.]+/g).map(Number);
  const luminance = ([r, g, b]) => {
    const [R, G, B] = [r, g, b].map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * R + 0.7152 * G + 0.0722 * B;
  };
  let back = null;
  for (let node = element; node && !back; node = node.parentElement) {
    const color = rgb(getComputedStyle(node).backgroundColor);
    if (color.length < 4 || color[3] > 0.9) back = color;
    if (color.length === 4 && color[3] === 0) back = null;
  }
  back = back || rgb(getComputedStyle(document.body).backgroundColor);
  const [a, b] = [luminance(rgb(getComputedStyle(element).color)), luminance(back)];
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}"""


def visible_chinese(tab) -> list[str]:
    """The page's visible lines holding Chinese, the language switch and the brand name left out."""
    text = tab.locator("body").inner_text()
    for kept in ALWAYS_BOTH:
        text = text.replace(kept, "")
    return [line for line in text.splitlines() if CJK.search(line)]


def visible_english(tab) -> list[str]:
    """The visible lines that hold an English phrase (four words or more) and no Chinese: on the zh page, text the
    language tables missed. Key names, paths and single words (English on the switch) are not phrases."""
    text = tab.locator("body").inner_text()
    return [line for line in text.splitlines() if ENGLISH_PHRASE.search(line) and not CJK.search(line)]


def left_once_drawn(read) -> list[str]:
    """What read() finds once it finds nothing, or after 5 s: the page draws a switch's texts over several frames,
    so a line read at the instant the first one changed can still be in the old language (an import too)."""
    deadline = time.monotonic() + 5
    while (found := read()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def switch_to(tab, lang: str) -> None:
    tab.locator("#lang").get_by_text("中文" if lang == "zh" else "English").click()
    tab.get_by_role("tab", name="路径" if lang == "zh" else "Paths").wait_for()


def field_error(tab, key: str) -> str:
    tab.wait_for_selector(f"#{key}.danlu-invalid")
    return tab.locator(f"#{key} .info-text").inner_text()


def upload_says(tab, words: str) -> None:
    tab.wait_for_function("document.querySelector('#preset-file [data-testid=\"upload-text\"]')"
                          f"?.innerText.includes('{words}')")


def test_the_chinese_page_is_chinese_and_english_leaves_no_chinese(page, gui, tmp_path):
    switch_to(page, "zh")
    open_tab(page, "路径")
    fill(page, "train_data_dir", "/no/such/folder")
    page.wait_for_function("document.querySelector('#train_data_dir .info-text')?.innerText.includes('不存在')")
    assert page.locator("#train_data_dir .info-text").evaluate(CONTRAST_JS) >= WCAG_AA
    shot(page, "paths-error-zh")
    assert CJK.search(page.locator("#dataset-report").inner_text())  # the dataset check's problem, in Chinese
    assert not (left := left_once_drawn(lambda: visible_english(page))), left
    open_tab(page, "预设")
    upload_says(page, "点击上传")  # Gradio's own words, in an English browser
    switch_to(page, "en")
    upload_says(page, "Click to Upload")
    assert not (left := left_once_drawn(lambda: visible_chinese(page))), left
    switch_to(page, "zh")
    upload_says(page, "点击上传")

    kohya = tmp_path / "kohya.json"
    kohya.write_text('{"LoRA_type": "Standard", "max_grad_norm": 0, "network_dim": 8, "network_alpha": 4, '
                     '"wandb_api_key": "x"}', encoding="utf-8")
    page.locator("#preset-file input[type=file]").set_input_files(str(kohya))
    page.locator("#message").filter(has_text="已导入").wait_for()
    report = page.locator("#message").inner_text()
    assert all(CJK.search(line) for line in report.splitlines() if line.strip()), report  # the reasons too
    assert not (left := left_once_drawn(lambda: visible_english(page))), left
    shot(page, "import-zh", full_page=True)

    switch_to(page, "en")
    open_tab(page, "Paths")
    page.wait_for_function("document.querySelector('#train_data_dir .info-text')?.innerText.includes('does not exist')")
    assert not (left := left_once_drawn(lambda: visible_chinese(page))), left  # no Chinese message left behind
    switch_to(page, "zh")
    page.wait_for_function("document.querySelector('#train_data_dir .info-text')?.innerText.includes('不存在')")
    fill(page, "train_data_dir", demo_paths(gui[1])["train_data_dir"])
    page.wait_for_selector("#train_data_dir:not(.danlu-invalid)")
    switch_to(page, "en")  # the next test's page starts in English, as the app was started


def test_error_text_is_readable_in_the_dark_theme(page, gui):
    page.goto(gui[0] + "?__theme=dark")
    page.locator("#family").filter(has_text="SD1.x").wait_for()
    open_tab(page, "Paths")
    original = page.locator("#output_name input").input_value()
    fill(page, "output_name", "a/b")
    assert "not valid" in field_error(page, "output_name")
    assert page.locator("#output_name .info-text").evaluate(CONTRAST_JS) >= WCAG_AA
    shot(page, "paths-error-dark")
    fill(page, "output_name", original)
    page.wait_for_selector("#output_name:not(.danlu-invalid)")
