"""The Compare tab: a queue of variations of the form's config (a sweep), and the grid of their previews (runs x
epochs, same prompt and seed) with their loss curves overlaid.

Start runs `python -m trainer sweep CONFIG --vary ... --sweep-dir DIR` as a detached child process in its own
session (trainer/run/child.py), so the queue goes on when the page is reloaded or the GUI restarted; the tab reads
DIR/sweep.json and the runs' folders (trainer/compare.py). The running variation also shows in the Run tab, like
any training.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from trainer.common.errors import ConfigError, UserError
from trainer.config.io import config_to_yaml
from trainer.experiments.compare import compare
from trainer.experiments.sweep import parse_vary, plan_sweep
from trainer.experiments.sweep_run import SWEEP_FILE, new_sweep_dir, read_sweep
from trainer.run import child
from trainer.run.events import STOP_FILE

from .charts import colored, series
from .fields import config_from_form
from .i18n import TEXT, t
from .live import chart_keys, chart_titles
from .page import Page
from .review import review
from .thumbnails import data_url
from .try_server import release_model

POLL_S = 2.0
THUMB_PX = 512  # the grid travels inside the page: cells show 256 px, a clicked cell up to 512 (ui/style.css)


def build(page: Page) -> Callable[[], None]:
    lang = page.form.lang
    page.text(gr.Markdown(t(lang, "sweep_intro")), "sweep_intro", "value")
    vary = page.text(gr.Textbox(label=t(lang, "sweep_vary"), lines=3, elem_id="sweep-vary",
                                placeholder="network_dim=8,16\nlearning_rate=1e-4,5e-4"), "sweep_vary")
    with gr.Row():
        start = page.text(gr.Button(t(lang, "sweep_start"), variant="primary", elem_id="sweep-start"), "sweep_start",
                          "value")
        stop = page.text(gr.Button(t(lang, "sweep_stop"), variant="stop", elem_id="sweep-stop"), "sweep_stop",
                         "value")
    queue = gr.Markdown(elem_id="sweep-queue")
    prompt = page.text(gr.Dropdown(choices=[], label=t(lang, "compare_prompt"), elem_id="compare-prompt"),
                       "compare_prompt")
    losses = page.text(gr.LinePlot(x="step", y="loss", color="run", label=t(lang, "compare_loss"), height=260,
                                   elem_id="compare-loss", **chart_titles(lang, "axis_loss", "axis_run")),
                       "compare_loss", **chart_keys("axis_loss", "axis_run"))
    grid = gr.HTML(elem_id="compare-grid")
    seen = gr.State(None)

    def wire() -> None:
        output_dir = page.form.components["output_dir"]
        start.click(lambda lang, items, *values: start_sweep(lang, items, values), [page.lang, vary, *page.form.inputs],
                    page.message)
        stop.click(lambda lang, folder: stop_sweep(lang, folder), [page.lang, output_dir], page.message)
        outputs = [queue, prompt, losses, grid, page.message, seen]
        gr.Timer(POLL_S).tick(show_sweep, [page.lang, output_dir, prompt, seen], outputs, show_progress="hidden",
                              concurrency_id="sweep-poll")
        prompt.input(lambda lang, folder, index, shown: show_sweep(lang, folder, index, {**(shown or {}),
                                                                                         "version": None}),
                     [page.lang, output_dir, prompt, seen], outputs, show_progress="hidden")

    return wire


def start_sweep(lang: str, items: str, values: tuple) -> str:
    """Check the base config and every variation, then start the queue; the problems otherwise."""
    lines = [line.strip() for line in (items or "").splitlines() if line.strip()]
    if not lines:
        return t(lang, "sweep_empty")
    checked = review(config_from_form(list(values)), full=True)
    if checked.problems:
        return "\n".join(f"- {p.line_in(lang)}" for p in checked.problems)
    base = checked.config.model_dump(mode="json")
    try:
        plan = plan_sweep(base, parse_vary(lines))
    except UserError as exc:
        return "\n".join(f"- {p.line_in(lang)}" for p in exc.problems)
    folder = new_sweep_dir(Path(checked.config.output_dir).expanduser().resolve())
    config_file = folder / "base.yaml"
    config_file.write_text(config_to_yaml(checked.config), encoding="utf-8")
    varied = [arg for line in lines for arg in ("--vary", line)]
    release_model()
    child.start_detached(["sweep", config_file, "--sweep-dir", folder, *varied], folder)  # outlives the page
    return t(lang, "sweep_started", n=len(plan.runs), folder=folder)


def stop_sweep(lang: str, output_dir: str) -> str:
    folder = latest_sweep(output_dir)
    if folder is None or read_sweep(folder).get("status") != "running":
        return t(lang, "sweep_none_running")
    (folder / STOP_FILE).touch()
    return t(lang, "sweep_stopping")


def latest_sweep(output_dir: str) -> Path | None:
    if not output_dir:
        return None
    sweeps = Path(output_dir).expanduser().resolve() / "sweeps"
    found = sorted(sweeps.glob(f"*/{SWEEP_FILE}"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent if found else None


def show_sweep(lang: str, output_dir: str, prompt: str | None, shown: dict | None) -> list[Any]:
    """The queue, the prompt choices, the overlaid losses, the grid of the newest sweep, and the message line
    once the queue the page saw running has ended; skipped when nothing changed since `shown` (version, the
    series the chart draws, the queue's status)."""
    shown = shown or {}
    folder = latest_sweep(output_dir)
    if folder is None:
        return [t(lang, "sweep_none"), gr.skip(), None, "", gr.skip(), None]
    version = (lang, str(folder), prompt, _stamp(folder))
    if version == shown.get("version"):
        return [gr.skip()] * 5 + [shown]
    try:
        data = compare(folder)
        status = read_sweep(folder).get("status")
    except (OSError, ValueError, ConfigError):  # sweep.json being replaced right now: next tick
        return [gr.skip()] * 5 + [shown]
    choices = [(f"{i}: {text[:80]}", str(i)) for i, text in enumerate(data["prompts"])]
    index = prompt if prompt in {value for _, value in choices} else (choices[0][1] if choices else None)
    frame = loss_frame(data)
    chart = colored(frame, "run", drawn=shown.get("drawn", ()) if shown.get("folder") == str(folder) else ())
    drawn = () if chart["value"] is None else series(frame, "run")
    ended = shown.get("status") == "running" and status != "running" and shown.get("folder") == str(folder)
    message = t(lang, "sweep_ended", n=len(data["runs"]), status=_status(status, lang), folder=folder) if ended \
        else gr.skip()
    redraw = chart["value"] is None and bool(series(frame, "run"))  # cleared for new series: drawn next tick
    return [queue_markdown(lang, data), gr.update(choices=choices, value=index), chart,
            grid_html(lang, data, int(index) if index is not None else 0), message,
            dict(version=None if redraw else version, drawn=drawn, status=status, folder=str(folder))]


def _stamp(folder: Path) -> tuple:
    """Changes whenever sweep.json or any run's events grow."""
    record = read_sweep(folder)
    events = [Path(run["run_dir"]) / "events.jsonl" for run in record["runs"] if run["run_dir"]]
    return ((folder / SWEEP_FILE).stat().st_mtime, *(p.stat().st_size for p in events if p.exists()))


def queue_markdown(lang: str, data: dict[str, Any]) -> str:
    rows = [f"| {t(lang, 'sweep_run')} | {t(lang, 'sweep_status')} | {t(lang, 'run_dir')} |", "|---|---|---|"]
    rows += [f"| `{run['label']}` | {_status(run['status'], lang)} | `{run['run_dir'] or '–'}` |"
             for run in data["runs"]]
    return "\n".join(rows)


def loss_frame(data: dict[str, Any]) -> pd.DataFrame:
    rows = [(step, loss, run["label"]) for run in data["runs"] for step, loss in run["smoothed"]]
    return pd.DataFrame(rows, columns=["step", "loss", "run"]).astype({"step": int, "loss": float})


def grid_html(lang: str, data: dict[str, Any], prompt: int) -> str:
    """Runs as rows, epochs as columns: the same prompt and seed in every cell, so the eye compares one thing."""
    cells = data["grid"].get(prompt, {})
    if not cells:
        return f"<p>{html.escape(t(lang, 'compare_empty'))}</p>"
    epochs = data["epochs"]
    head = "".join(f"<th>{html.escape(t(lang, 'epoch_label', epoch=e))}</th>" for e in epochs)
    body = []
    for run in data["runs"]:
        row = "".join(_cell(cells.get(epoch, {}).get(run["label"])) for epoch in epochs)
        body.append(f"<tr><th>{html.escape(run['label'])}</th>{row}</tr>")
    return f'<table class="danlu-compare"><tr><th></th>{head}</tr>{"".join(body)}</table>'


def _cell(path: str | None) -> str:
    if not path or not Path(path).is_file():
        return "<td></td>"
    # tabindex: a click focuses the image, and the focused one is shown large over the page (ui/style.css)
    return (f'<td><img src="{data_url(path, THUMB_PX)}" title="{html.escape(path)}" '
            'tabindex="0" class="danlu-zoomable"></td>')


def _status(status: str, lang: str) -> str:
    """A queued run's status in words (a status the page has no words for as it is)."""
    key = f"status_{status}"
    return t(lang, key) if key in TEXT[lang] else status
