"""The Run tab: Check, Start, Stop, TensorBoard, and the live view of the training (polled about once a second).

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

from . import run_view, settings
from .i18n import t
from .live import live_outputs, memory_warning, problems_markdown, render_review
from .page import Page, form_data
from .review import review
from .tensorboard import open_tensorboard

POLL_S = 1.0
STOP_TIMEOUT_S = 120.0  # a clean stop saves the LoRA first: allow for a large model's save
LOG_LINES = 30


def build(page: Page, views: dict[str, Any]) -> None:
    lang = page.form.lang
    with gr.Row():
        check = page.text(gr.Button(t(lang, "check"), elem_id="check"), "check", "value")
        start = page.text(gr.Button(t(lang, "start"), variant="primary", elem_id="start"), "start", "value")
        stop = page.text(gr.Button(t(lang, "stop"), variant="stop", elem_id="stop"), "stop", "value")
        board = page.text(gr.Button(t(lang, "tensorboard"), elem_id="tensorboard"), "tensorboard", "value")
    run = {
        "status": gr.Markdown(t(lang, "status_idle"), elem_id="run-status"),
        "progress": gr.HTML(elem_id="progress"),
        "banners": gr.HTML(elem_id="banners"),
    }
    with gr.Row():
        run["loss"] = page.text(gr.LinePlot(x="step", y="loss", color="series", label=t(lang, "loss_chart"),
                                            height=260, elem_id="loss-chart"), "loss_chart")
        run["lr"] = page.text(gr.LinePlot(x="step", y="lr", color="series", label=t(lang, "lr_run_chart"),
                                          height=260, elem_id="lr-run-chart"), "lr_run_chart")
    run["gallery"] = page.text(gr.Gallery(label=t(lang, "samples"), columns=6, height=360, object_fit="contain",
                                          elem_id="samples", allow_preview=True, preview=False,
                                          fit_columns=False), "samples")
    run["log"] = page.text(gr.Textbox(label=t(lang, "log"), lines=12, max_lines=12, autoscroll=True,
                                      elem_id="log"), "log")
    run["checkpoints"] = gr.Markdown(elem_id="checkpoints")
    page.form.build_tab("run")
    tb_url = gr.Textbox(visible=False, elem_id="tensorboard-url")
    _wire(page, views, run, dict(check=check, start=start, stop=stop, board=board, tb_url=tb_url))


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
            message = f"output_dir: '{result.config.output_dir}' cannot be written ({exc.strerror or exc})"
        return [message, *render_review(page, result, lang, shown)]

    buttons["check"].click(on_check, form_inputs, checked, concurrency_id="check")
    buttons["start"].click(on_start, form_inputs, checked, concurrency_id="start")
    buttons["stop"].click(lambda lang: _stop(page, lang), page.lang, page.message, concurrency_id="stop")
    buttons["board"].click(lambda lang: _tensorboard(page, lang), page.lang, [page.message, buttons["tb_url"]]) \
        .then(None, buttons["tb_url"], None, js="(url) => { if (url) window.open(url, '_blank'); }")
    _wire_poll(page, run)


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


def _wire_poll(page: Page, run: dict[str, Any]) -> None:
    timer = gr.Timer(POLL_S)
    seen = gr.State(None)  # what this page shows already: unchanged parts are skipped
    output_dir = page.form.components["output_dir"]
    outputs = [run[name] for name in ("status", "progress", "banners", "loss", "lr", "gallery", "log",
                                      "checkpoints")] + [seen]

    def poll(lang: str, folder: str, shown: Any) -> list[Any]:
        state = page.monitor.poll([Path(folder).expanduser()] if folder else [])
        run_dir = page.monitor.run_dir
        version = (lang, str(run_dir), state.status if state else None, state.step if state else 0,
                   len(state.sample_list) if state else 0, len(state.banners) if state else 0,
                   len(state.checkpoints) if state else 0)
        if version == shown and state is not None and state.is_over:
            return [gr.skip()] * (len(outputs) - 1) + [shown]
        changed_samples = shown is None or version[:2] != shown[:2] or version[4] != shown[4]
        changed_curve = shown is None or version[:4] != shown[:4]
        return [run_view.status_markdown(state, run_dir, lang), run_view.progress_html(state, lang),
                run_view.banners_html(state, lang),
                run_view.loss_frame(state, lang) if changed_curve else gr.skip(),
                run_view.lr_frame(state) if changed_curve else gr.skip(),
                run_view.gallery_items(state, run_dir, lang) if changed_samples else gr.skip(),
                _log_text(run_dir), run_view.checkpoints_markdown(state), version]

    timer.tick(poll, [page.lang, output_dir, seen], outputs, show_progress="hidden", concurrency_id="poll")


def _log_text(run_dir: Path | None) -> str:
    return "\n".join(last_log_lines(run_dir, LOG_LINES, CONSOLE_LOG)) if run_dir else ""
