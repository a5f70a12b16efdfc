"""Check, Start and Stop in the bar under the header (every tab), and the Run tab: TensorBoard and the live view of
the training (polled about once a second; the poll also drives the bar's line and which buttons are enabled).

Start runs the same check as `python -m trainer check`, then starts `python -m trainer train RUN/config.yaml` as
a child process (trainer/runner.py). The view reads the run folder only, so it works the same for a run this GUI
started and for one it found again after a reload or a restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from trainer.common.errors import UserError
from trainer.run.state import CONSOLE_LOG, last_log_lines

from . import log_lines, run_view, settings
from .charts import LOSS_COLORS, LR_FORMAT, PALETTE, colored, series
from .i18n import t
from .live import chart_keys, chart_titles, live_outputs, memory_warning, problems_markdown, render_review
from .page import Page, form_data
from .review import review
from .tensorboard import open_tensorboard

POLL_S = 1.0
STOP_TIMEOUT_S = 120.0  # a clean stop saves the LoRA first: allow for a large model's save
LOG_LINES = 30
# The browser's permission for the notification when a training ends (ui/page_head.html shows it)
ASK_NOTIFY = ("() => { if (window.Notification && Notification.permission === 'default') "
              "Notification.requestPermission(); }")


def build_bar(page: Page) -> dict[str, Any]:
    """Check, Start and Stop with a one-line state of the training, under the header: in reach from every tab.
    Start is enabled while no training runs and the form has no problem, Stop while one runs (the poll)."""
    lang = page.form.lang
    with gr.Row(elem_id="run-bar", equal_height=True):
        line = gr.HTML(run_view.run_line(None, None, lang, ready=False, demo=False), elem_id="run-line")
        check = page.text(gr.Button(t(lang, "check"), elem_id="check", size="md", scale=0, min_width=130),
                          "check", "value")
        start = page.text(gr.Button(t(lang, "start"), variant="primary", elem_id="start", size="md", scale=0,
                                    min_width=150), "start", "value")
        stop = page.text(gr.Button(t(lang, "stop"), variant="stop", elem_id="stop", size="md", scale=0,
                                   min_width=90, interactive=False), "stop", "value")
    # the poll's clock, outside the tabs: Gradio starts a component inside a tab only once the tab is opened
    return dict(line=line, check=check, start=start, stop=stop, timer=gr.Timer(POLL_S))


def build(page: Page, views: dict[str, Any], bar: dict[str, Any]) -> None:
    lang = page.form.lang
    board = page.text(gr.Button(t(lang, "tensorboard"), elem_id="tensorboard", size="md"), "tensorboard", "value")
    run = {
        "status": gr.Markdown(t(lang, "status_idle"), elem_id="run-status"),
        "progress": gr.HTML(elem_id="progress"),
        "banners": gr.HTML(elem_id="banners"),
    }
    with gr.Row():
        run["loss"] = page.text(gr.LinePlot(x="step", y="loss", color="series", label=t(lang, "loss_chart"),
                                            height=260, elem_id="loss-chart", **chart_titles(lang, "axis_loss")),
                                "loss_chart", **chart_keys("axis_loss"))
        run["lr"] = page.text(gr.LinePlot(x="step", y="lr", color="series", label=t(lang, "lr_run_chart"),
                                          height=260, elem_id="lr-run-chart", y_axis_format=LR_FORMAT,
                                          **chart_titles(lang, "axis_lr")),
                              "lr_run_chart", **chart_keys("axis_lr"))
    run["gallery"] = page.text(gr.Gallery(label=t(lang, "samples"), columns=6, height=360, object_fit="contain",
                                          elem_id="samples", allow_preview=True, preview=False,
                                          fit_columns=False), "samples")
    run["log"] = page.text(gr.Textbox(label=t(lang, "log"), lines=12, max_lines=12, autoscroll=True,
                                      elem_id="log"), "log")
    run["checkpoints"] = gr.Markdown(elem_id="checkpoints")
    page.form.build_tab("run")
    tb_url = gr.Textbox(visible=False, elem_id="tensorboard-url")
    _wire(page, views, run, dict(bar, board=board, tb_url=tb_url))


def _wire(page: Page, views: dict[str, Any], run: dict[str, Any], buttons: dict[str, Any]) -> None:
    form_inputs = [page.lang, page.shown_errors, *page.form.inputs]
    checked = [page.message, *live_outputs(page, views)]

    def on_check(lang: str, shown: dict, *values: Any) -> list[Any]:
        data = form_data(values)
        settings.save_form(data)
        result = review(data, full=True)
        message = problems_markdown(result, lang) or t(lang, "check_ok", steps=result.plan.total_steps)
        return [message, *render_review(page, result, lang, shown)]

    def on_start(lang: str, shown: dict, *values: Any) -> list[Any]:
        data = form_data(values)
        settings.save_form(data)
        result = review(data, full=True)
        if result.problems:
            return [problems_markdown(result, lang), *render_review(page, result, lang, shown)]
        try:
            handle = page.monitor.start(result.config)  # validated once, by review
            # a warning, not a refusal: the estimate is uncalibrated and may be pessimistic
            message = "\n\n".join(filter(None, (memory_warning(result, lang),
                                                  t(lang, "started", run_dir=handle.run_dir))))
        except UserError as exc:  # AlreadyRunning names the running folder
            running = page.monitor.run_dir
            message = t(lang, "already_running", run_dir=running) if running else exc.message
        except OSError as exc:  # the run folder could not be made: said at Start, not as a bare "Error" toast
            message = t(lang, "output_unwritable", path=result.config.output_dir, reason=exc.strerror or exc)
        return [message, *render_review(page, result, lang, shown)]

    buttons["check"].click(on_check, form_inputs, checked, concurrency_id="check", show_progress_on=page.message)
    buttons["start"].click(on_start, form_inputs, checked, concurrency_id="start", show_progress_on=page.message)
    buttons["start"].click(None, js=ASK_NOTIFY)  # a user's click: the moment a browser lets a page ask
    buttons["stop"].click(lambda lang: _stop(page, lang), page.lang, page.message, concurrency_id="stop")
    buttons["board"].click(lambda lang: _tensorboard(page, lang), page.lang, [page.message, buttons["tb_url"]]) \
        .then(None, buttons["tb_url"], None, js="(url) => { if (url) window.open(url, '_blank'); }")
    _wire_poll(page, run, buttons)


def _stop(page: Page, lang: str) -> str:
    result = page.monitor.stop(STOP_TIMEOUT_S)
    if result is None:
        return t(lang, "nothing_to_stop")
    if result == "forced":
        return t(lang, "stopped_forced")
    state = page.monitor.poll([])
    saved = state.checkpoints[-1].path if state and state.checkpoints else "–"
    return t(lang, "stopped_clean", path=saved)


def _tensorboard(page: Page, lang: str) -> tuple[str, str]:
    run_dir = page.monitor.run_dir
    if run_dir is None:
        return t(lang, "tb_no_run"), ""
    try:
        url = open_tensorboard(run_dir / "tb")
    except OSError as exc:
        return t(lang, "tb_failed", reason=exc), ""
    return t(lang, "tb_started", url=f"[{url}]({url})"), url


def _wire_poll(page: Page, run: dict[str, Any], bar: dict[str, Any]) -> None:
    timer = bar["timer"]
    seen = gr.State(None)  # what this page shows already (version, series drawn): unchanged parts are skipped
    output_dir = page.form.components["output_dir"]
    outputs = [bar[name] for name in ("line", "start", "stop")] + [
        run[name] for name in ("status", "progress", "banners", "loss", "lr", "gallery", "log", "checkpoints")]

    def poll(lang: str, folder: str, errors: dict, shown: dict | None) -> list[Any]:
        run_dir, state = page.monitor.view(Path(folder).expanduser() if folder else None)
        running = state is not None and not state.is_over
        version = (lang, str(run_dir), state.status if state else None, state.step if state else 0,
                   len(state.sample_list) if state else 0, len(state.banners) if state else 0,
                   len(state.checkpoints) if state else 0, bool(errors))
        before = shown["version"] if shown else None
        if version == before and not running and not shown["redraw"]:
            return [gr.skip()] * len(outputs) + [shown]
        changed_samples = before is None or version[:2] != before[:2] or version[4] != before[4]
        changed_curve = before is None or version[:4] != before[:4] or shown["redraw"]
        curves, drawn, redraw = _curves(state, lang, shown["drawn"] if shown else {}) if changed_curve else \
            ([gr.skip(), gr.skip()], shown["drawn"], False)
        return [bar_line(lang, folder, errors, run_dir, state), gr.update(interactive=not running and not errors),
                gr.update(interactive=running),
                run_view.status_markdown(state, run_dir, lang), run_view.progress_html(state, lang),
                run_view.banners_html(state, lang), *curves,
                run_view.gallery_items(state, run_dir, lang) if changed_samples else gr.skip(),
                _log_text(run_dir, lang), run_view.checkpoints_markdown(state),
                dict(version=version, drawn=drawn, redraw=redraw)]

    # the language the page shows (server side): a tick sent just before a language switch draws the new one
    timer.tick(poll, [page.shown_lang, output_dir, page.shown_errors, seen], outputs + [seen], show_progress="hidden",
               concurrency_id="poll")


def bar_line(lang: str, folder: str, errors: dict, run_dir: Path | None, state: Any) -> str:
    """The bar's line for a page whose output_dir is `folder`, showing `errors` and the run monitor.view gave."""
    demo = settings.is_demo(Path(folder).expanduser() if folder else None)
    return run_view.run_line(state, run_dir, lang, ready=not errors, demo=demo)


def _curves(state: Any, lang: str, drawn: dict[str, tuple]) -> tuple[list[Any], dict[str, tuple], bool]:
    """The loss and LR charts' updates, the series each then draws, and whether one was cleared to be drawn
    afresh at the next poll (ui/charts.py: its series changed, e.g. with the language)."""
    updates, now, redraw = [], {}, False
    for name, frame, palette in (("loss", run_view.loss_frame(state, lang), LOSS_COLORS),
                                 ("lr", run_view.lr_frame(state, lang), PALETTE)):
        update = colored(frame, "series", palette, drawn=drawn.get(name, ()))
        cleared = update["value"] is None
        updates.append(update)
        now[name] = () if cleared else series(frame, "series")
        redraw = redraw or (cleared and bool(series(frame, "series")))
    return updates, now, redraw


def _log_text(run_dir: Path | None, lang: str) -> str:
    """The end of console.log, Danlu's own lines in the page's language (ui/log_lines.py)."""
    return log_lines.log_text(last_log_lines(run_dir, LOG_LINES, CONSOLE_LOG), lang) if run_dir else ""
