"""The Gradio page: header with the language switch, the message line, and the tabs.

The form's tabs (Paths, Steps, Model effect, and the Run tab's preview settings) come from the schema (ui/form.py);
the views that follow the form are in ui/live.py, the run in ui/run_tab.py, presets in ui/presets_tab.py and the
LoRA tools in ui/tools_tab.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from trainer.adapters.sd_scripts import module_for

from . import (
    compare_tab,
    dataset_tab,
    live,
    lr_finder,
    picker,
    presets_tab,
    run_tab,
    run_view,
    settings,
    tools_tab,
    try_tab,
)
from .charts import LR_FORMAT
from .fields import form_values
from .form import Form
from .i18n import LANGS, t
from .monitor import RunMonitor
from .page import Page, form_data
from .review import Review, review

PAGE_HEAD = (Path(__file__).resolve().parent / "page_head.html").read_text(encoding="utf-8")  # launch(head=...)
MAX_SESSIONS = 100  # browser sessions whose state Gradio keeps (its default, 10000, is gigabytes of this page)


def build_app(lang: str, initial: dict[str, Any], monitor: RunMonitor | None = None) -> gr.Blocks:
    """The whole page; `initial` is the config the form shows at first (the last form, or the demo)."""
    form = Form(lang)
    with gr.Blocks(title=run_view.TITLE, analytics_enabled=False) as blocks:
        with gr.Row(elem_id="header"):
            title = gr.Markdown(f"## {t(lang, 'title')}", elem_id="title")
            switch = gr.Radio([("中文", "zh"), ("English", "en")], value=lang, label=t(lang, "lang_label"),
                              elem_id="lang", scale=0, min_width=200)
        page = Page(switch, form, gr.Markdown("", elem_id="message", render=False), monitor or RunMonitor(),
                    gr.State({}))
        bar = run_tab.build_bar(page)
        with gr.Row(elem_id="message-row"):
            page.message.render()
            close = gr.Button("✕", elem_id="message-close", size="sm", scale=0, min_width=30)
        close.click(lambda: "", None, page.message, show_progress="hidden")
        page.later.append(picker.build(page))
        with gr.Tabs(elem_id="tabs") as tabs:
            views = _form_tabs(page)
            with page.tab("tab_presets", "presets"):
                page.later.append(presets_tab.build(page))
            with page.tab("tab_run", "run"):
                run_tab.build(page, views, bar)
            with page.tab("tab_compare", "compare"):
                page.later.append(compare_tab.build(page))
            with page.tab("tab_try", "try"):
                page.later.append(try_tab.build(page))
            with page.tab("tab_tools", "tools"):
                tools_tab.build(page)
        _wire_live(page, views)
        for wire in page.later:
            wire()
        _wire_language(page, title, views, bar["line"])
        page.then_review(blocks.load(lambda: _on_load(page, initial), None, [tabs, switch, *form.inputs],
                                     show_progress="hidden"))
        blocks.unload(_session_forgetter(blocks))
    _no_hidden_progress(blocks)
    return blocks


def _no_hidden_progress(blocks: gr.Blocks) -> None:
    """An event that shows no progress marks no component as loading. Gradio's page otherwise keeps a loading
    status for every output an event ever had and refreshes all of them on every later event (the 1 s poll
    too); for a tab or a group box that means copying every widget inside it: after one language switch (400
    outputs, tabs and boxes among them) each tab switch took 3-5 s of script time (bench/gui_speed.py)."""
    for fn in blocks.fns.values():
        if fn.show_progress == "hidden" and fn.show_progress_on is None:
            fn.show_progress_on = []


def _session_forgetter(blocks: gr.Blocks) -> Callable[[gr.Request], None]:
    """Gradio keeps each browser session's copy of the page's config (about 0.7 MB with Danlu's 400-odd blocks)
    until MAX_SESSIONS newer ones push it out, long after the tab closed: drop it when the tab goes."""

    def forget(request: gr.Request) -> None:
        blocks.state_holder.session_data.pop(request.session_hash, None)
        blocks.state_holder.time_last_used.pop(request.session_hash, None)

    return forget


def _on_load(page: Page, initial: dict[str, Any]) -> list[Any]:
    """A (re)loaded page shows the last form in the last language, and the Run tab when a training runs (it
    reattaches there)."""
    data = settings.load_form() or initial
    running = page.monitor.poll([Path(str(data.get("output_dir") or "")).expanduser()])
    selected = gr.Tabs(selected="run") if running is not None and not running.is_over else gr.skip()
    lang = settings.load_lang()
    return [selected, lang if lang in LANGS else gr.skip(), *form_values(data)]


def _form_tabs(page: Page) -> dict[str, Any]:
    """Paths, Steps and Model effect: the schema's fields, each tab with the views that explain it."""
    form, lang, views = page.form, page.form.lang, {}
    with page.tab("tab_paths", "paths"):
        views["family"] = gr.Markdown(elem_id="family")
        form.build_tab("paths")
        views["dataset"] = gr.Markdown(elem_id="dataset-report")
    with page.tab("tab_dataset", "dataset") as dataset:  # preparing the data comes before the steps
        page.later.append(dataset_tab.build(page, dataset))
    with page.tab("tab_steps", "steps"):
        views["plan_title"] = page.text(gr.Markdown(f"**{t(lang, 'plan_title')}**"), "plan_title", "value")
        views["plan"] = gr.Markdown(elem_id="plan")
        form.build_tab("steps")
    with page.tab("tab_effect", "effect"):
        views["advice"] = gr.Markdown(elem_id="advice")
        views["lr"] = page.text(gr.LinePlot(x="step", y="lr", color="group", label=t(lang, "lr_chart"),
                                            height=220, elem_id="lr-chart", y_axis_format=LR_FORMAT,
                                            **live.chart_titles(lang, "axis_lr", "axis_group")),
                                "lr_chart", **live.chart_keys("axis_lr", "axis_group"))
        page.later.append(lr_finder.build(page))
        form.build_tab("effect")
    return views


def _wire_live(page: Page, views: dict[str, Any]) -> None:
    """Review the form after each edit by the user (`input`, not `change`: filling the whole form from a preset
    or on load would otherwise start one review per field; and `blur` of text fields, since a pasted path fires
    no `input` in Gradio 6), and after each event passed to page.then_review."""
    def refresh(lang: str, shown: dict[str, str], *values: Any) -> list[Any]:
        return live.render_review(page, review(form_data(values)), lang, shown)

    inputs, outputs = [page.lang, page.shown_errors, *page.form.inputs], live.live_outputs(page, views)
    typed = [c.blur for c in page.form.inputs if isinstance(c, (gr.Textbox, gr.Number))]
    gr.on([c.input for c in page.form.inputs] + typed, refresh, inputs, outputs, trigger_mode="always_last",
          show_progress="hidden")
    page.then_review = lambda event: event.then(refresh, inputs, outputs, show_progress="hidden")
    network_type = page.form.components["network_type"]
    network_type.input(module_for, [network_type, page.form.components["network_module"]],
                       page.form.components["network_module"], show_progress="hidden")


def _wire_language(page: Page, title: gr.Markdown, views: dict[str, Any], line: gr.HTML) -> None:
    """One event words anew what the page shows: the header, the run bar's line (else it waits for the next poll),
    each text that differs between the languages, the review the page shows (Page.reviewed, not the form's 150
    widgets) and what the tabs registered with Page.on_language. The browser's cost grows with every input
    gathered, every attribute set and every event (each walks every widget that ever had a loading status): one
    event, few inputs, changed attributes only (figures in docs/benchmarks.md)."""
    boxes = [box for box, _ in page.form.titled]
    output_dir = page.form.components["output_dir"]
    followers = page.language_followers

    def switch(lang: str, reviewed: Review | None, folder: str, *more: Any) -> list[Any]:
        settings.save_lang(lang)
        errors = reviewed.errors_in(lang) if reviewed else {}
        shown = live.review_views(reviewed, lang) if reviewed else [gr.skip()] * len(live.LIVE_VIEWS)
        run_dir, state = page.monitor.view(Path(folder).expanduser() if folder else None)
        # the message line answered the last action in the old language: cleared, not left behind
        chrome = [f"## {t(lang, 'title')}", "", lang, run_tab.bar_line(lang, folder, errors, run_dir, state)]
        updates = chrome + page.relabel(lang) + page.form.box_labels(lang) + shown + [errors] + \
            page.form.language_updates(errors, lang)
        for fn, inputs, _ in followers:
            updates += fn(lang, *more[:len(inputs)])
            more = more[len(inputs):]
        return updates

    outputs = [title, page.message, page.shown_lang, line, *page.localized_components, *boxes,
               *(views[name] for name in live.LIVE_VIEWS), page.shown_errors, *page.form.inputs]
    inputs = [page.lang, page.reviewed, output_dir]
    for _, more_inputs, more_outputs in followers:
        inputs += more_inputs
        outputs += more_outputs
    page.lang.change(switch, inputs, outputs, show_progress="hidden")
