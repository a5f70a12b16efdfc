"""The Try tab: LoRA files at several strengths, seeds and prompts on their base model, as a grid with measured
effects (trainer/try_lora/; docs/training.md, "Try the LoRA").

Start checks the settings here (torch-free: trainer.try_lora.cli.check_try_args), then hands the grid to the GUI's
try server (trainer/try_lora/client.py), one child that keeps the base model loaded between grids and lets it go
after ten idle minutes or when a training starts (ui/try_server.py). The tab polls FOLDER/progress.jsonl and shows
each cell as it finishes, then the effects table, the effect-vs-strength chart and the labelled grid.png; a reloaded
page finds the folder again. Stop writes FOLDER/STOP: the grid ends after the current cell and keeps what is done.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import psutil
from PIL import Image

from trainer.common.errors import UserError
from trainer.config import SAMPLERS
from trainer.run import child
from trainer.run.events import new_run_dir
from trainer.run.state import CONSOLE_LOG
from trainer.try_lora.cli import check_try_args
from trainer.try_lora.grid import AXES, GRID_JSON, LABEL_WORDS, PROGRESS_FILE, STOP_FILE, GridSpec
from trainer.try_lora.runs import RUN_CONFIG, run_defaults

from .charts import colored
from .i18n import TEXT, t
from .page import Page
from .thumbnails import data_url
from .try_server import server_log, try_server

POLL_S = 1.0
THUMB_PX = 192
TABLE_COLUMNS = ("file", "strength", "effect", "effect_min", "effect_max", "seed_spread", "base_seed_spread",
                 "broken")


def build(page: Page) -> Callable[[], None]:
    lang = page.form.lang
    page.text(gr.Markdown(t(lang, "try_intro")), "try_intro", "value")
    with gr.Row():
        run = page.text(gr.Dropdown(choices=[], label=t(lang, "try_run"), allow_custom_value=True, scale=4,
                                    elem_id="try-run"), "try_run")
        use_run = page.text(gr.Button(t(lang, "try_use_run"), elem_id="try-use-run", scale=1), "try_use_run", "value")
    inputs = _settings_inputs(page)
    with gr.Row():
        start = page.text(gr.Button(t(lang, "try_start"), variant="primary", elem_id="try-start"), "try_start", "value")
        stop = page.text(gr.Button(t(lang, "try_stop"), variant="stop", elem_id="try-stop"), "try_stop", "value")
    status = gr.Markdown(elem_id="try-status")
    grid = gr.HTML(elem_id="try-grid")
    table = page.text(gr.Dataframe(label=t(lang, "try_table"), interactive=False, elem_id="try-table"), "try_table")
    titles = {"x_title": "try_axis_strength", "y_title": "try_axis_effect", "color_title": "try_axis_file"}
    chart = page.text(gr.LinePlot(x="strength", y="effect", color="file", label=t(lang, "try_chart"), height=260,
                                  elem_id="try-chart", **{k: t(lang, v) for k, v in titles.items()}),
                      "try_chart", **titles)
    picture = page.text(gr.Image(label=t(lang, "try_png"), type="pil", format="png", interactive=False,
                                 elem_id="try-png"), "try_png")
    folder, seen, runs_seen = gr.State(""), gr.State(None), gr.State(None)

    def wire() -> None:
        output_dir = page.form.components["output_dir"]
        use_run.click(fill_from_run, [page.lang, run], [page.message, *inputs.values()])
        start.click(start_grid, [page.lang, run, output_dir, *inputs.values()],
                    [page.message, folder, seen, grid, table, chart, picture])
        stop.click(stop_grid, [page.lang, folder], page.message)
        gr.Timer(POLL_S).tick(poll, [page.lang, folder, seen, output_dir, runs_seen],
                              [status, grid, table, chart, picture, seen, run, runs_seen], show_progress="hidden",
                              concurrency_id="try-poll")

    return wire


def axis_choices(lang: str) -> list[tuple[str, str]]:
    """The grid's axes (trainer/try_lora/grid.py AXES) as the rows' and columns' choices, named in lang."""
    return [(t(lang, f"try_axis_{axis}"), axis) for axis in AXES]


def _settings_inputs(page: Page) -> dict[str, Any]:
    lang, text = page.form.lang, page.text
    inputs = {"base": text(gr.Textbox(label=t(lang, "try_base"), elem_id="try-base"), "try_base"),
              "files": text(gr.Textbox(label=t(lang, "try_files"), lines=3, elem_id="try-files"), "try_files"),
              "prompts": text(gr.Textbox(label=t(lang, "try_prompts"), lines=2, elem_id="try-prompts"), "try_prompts")}
    with gr.Row():
        inputs["strengths"] = text(gr.Textbox("0, 0.4, 0.7, 1", label=t(lang, "try_strengths"),
                                              elem_id="try-strengths"), "try_strengths")
        inputs["seeds"] = text(gr.Textbox("1, 2", label=t(lang, "try_seeds"), elem_id="try-seeds"), "try_seeds")
        inputs["rows"] = text(gr.Dropdown(axis_choices(lang), value=["strength"], multiselect=True,
                                          label=t(lang, "try_rows"), elem_id="try-rows"), "try_rows")
        inputs["cols"] = text(gr.Dropdown(axis_choices(lang), value=["file"], multiselect=True,
                                          label=t(lang, "try_cols"), elem_id="try-cols"), "try_cols")
    page.on_language(lambda lang: [gr.update(choices=axis_choices(lang))] * 2, [], [inputs["rows"], inputs["cols"]])
    with gr.Row():
        inputs["sampler"] = text(gr.Dropdown(list(SAMPLERS), value="euler_a", label=t(lang, "try_sampler"),
                                             elem_id="try-sampler"), "try_sampler")
        for key in ("steps", "cfg", "width", "height"):
            inputs[key] = text(gr.Number(0, label=t(lang, f"try_{key}"), precision=None if key == "cfg" else 0,
                                         minimum=0, elem_id=f"try-{key}"), f"try_{key}")
    return inputs


# --- actions ------------------------------------------------------------------------------------------------

def fill_from_run(lang: str, run: str) -> list[Any]:
    """The run's base model, files, prompts, seeds and sampler into the fields (a message when it has none)."""
    if not run:
        return [t(lang, "try_pick_run")] + [gr.skip()] * 12
    try:
        found = run_defaults(run)
    except UserError as exc:
        return [_problems(lang, exc)] + [gr.skip()] * 12
    one_run = len(found["loras"]) > 1
    return ["", found["base"], "\n".join(lora.path for lora in found["loras"]), "\n".join(found["prompts"]),
            gr.skip(), ", ".join(map(str, found["seeds"])), gr.skip(), ["epoch"] if one_run else ["file"],
            found["sampler"], gr.skip(), gr.skip(), gr.skip(), gr.skip()]


def try_args(run: str, base: str, files: str, prompts: str, strengths: str, seeds: str, rows: list[str],
             cols: list[str], sampler: str, steps: float | None, cfg: float | None, width: float | None,
             height: float | None) -> list[str]:
    """The `python -m trainer try` options of the tab's fields (empty fields: the run's defaults)."""
    args: list[str] = ["--run", run] if run else []
    args += ["--base", base.strip()] if base and base.strip() else []
    paths = [line.strip() for line in (files or "").splitlines() if line.strip()]
    args += ["--lora", *paths] if paths else []
    lines = [line.strip() for line in (prompts or "").splitlines() if line.strip()]
    args += ["--prompts", *(" " + line if line.startswith("-") else line for line in lines)] if lines else []
    args += ["--strengths", strengths or "", "--seeds", seeds or ""]
    args += ["--rows", ",".join(rows or [])] if rows else []
    args += ["--cols", ",".join(cols or [])] if cols else []
    args += ["--sampler", sampler] if sampler else []
    for option, value in (("--steps", steps), ("--cfg", cfg), ("--width", width), ("--height", height)):
        if value:  # 0: each prompt's own value
            args += [option, f"{value:g}" if option == "--cfg" else str(int(value))]
    return args


def start_grid(lang: str, run: str, output_dir: str, *fields: Any) -> list[Any]:
    """Check the settings, then start the child; [message, folder, seen, and the last grid's views cleared (a chart
    with no value draws the next grid's series afresh: ui/charts.py)]."""
    args = try_args(run, *fields)
    try:
        spec = check_try_args(args)
    except UserError as exc:
        return [_problems(lang, exc)] + [gr.skip()] * 6
    parent = Path(spec.run) if spec.run else Path(output_dir or ".").expanduser().resolve()
    folder = new_run_dir(parent, "try")
    try_server().submit(args, folder)
    return [t(lang, "try_started", n=len(spec.cells()), folder=folder), str(folder), None, "", None, None, None]


def stop_grid(lang: str, folder: str) -> str:
    if not folder or (Path(folder) / GRID_JSON).exists():
        return t(lang, "try_none_running")
    (Path(folder) / STOP_FILE).touch()
    return t(lang, "try_stopping")


def _problems(lang: str, exc: UserError) -> str:
    return "\n".join(f"- {problem.line_in(lang)}" for problem in exc.problems)


# --- watching -----------------------------------------------------------------------------------------------

def poll(lang: str, folder: str, seen: Any, output_dir: str, runs_seen: Any) -> list[Any]:
    """[status, grid, table, chart, picture, seen, run choices, runs_seen]; each part skipped when unchanged."""
    runs = run_choices(output_dir)
    run_update = [gr.update(choices=runs), runs] if runs != runs_seen else [gr.skip(), runs_seen]
    if not folder:
        return [gr.skip()] * 5 + [seen] + run_update
    progress = Path(folder) / PROGRESS_FILE
    alive = grid_process_alive(folder)
    version = (lang, progress.stat().st_size if progress.exists() else 0, alive)
    if version == seen:
        return [gr.skip()] * 5 + [seen] + run_update
    events = read_progress(progress)
    views = [status_markdown(lang, folder, events, alive), grid_html(lang, events)]
    finished = next((e for e in events if e["type"] == "finished" and e.get("json")), None)
    if finished is None:
        return views + [gr.skip()] * 3 + [version] + run_update
    record = json.loads(Path(finished["json"]).read_text(encoding="utf-8"))
    with Image.open(finished["grid"]) as image:
        image.load()
    chart = colored(chart_frame(lang, record), "file")
    return views + [summary_frame(lang, record), chart, image, version] + run_update


def run_choices(output_dir: str) -> list[str]:
    """Run folders under output_dir/runs with a config, newest first."""
    if not output_dir:
        return []
    runs = Path(output_dir).expanduser().resolve() / "runs"
    return sorted((str(path.parent) for path in runs.glob(f"*/{RUN_CONFIG}")), reverse=True)


def grid_process_alive(folder: str) -> bool:
    """The process rendering the grid (its process.json: this GUI's try server, or an earlier one's) still runs."""
    try:
        record = json.loads((Path(folder) / child.PROCESS_FILE).read_text(encoding="utf-8"))
        return psutil.Process(int(record["pid"])).status() != psutil.STATUS_ZOMBIE
    except (OSError, ValueError, KeyError, psutil.Error):
        return False


def read_progress(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:  # the line being written right now
            continue
    return events


def status_markdown(lang: str, folder: str, events: list[dict[str, Any]], alive: bool) -> str:
    plan = next((e for e in events if e["type"] == "plan"), None)
    done = sum(e["type"] == "cell" for e in events)
    finished = next((e for e in events if e["type"] == "finished"), None)
    error = next((e for e in events if e["type"] == "error"), None)
    if error is not None:
        why = error.get("zh") if lang == "zh" and error.get("zh") else f"{error['message']} {error.get('hint', '')}"
        return f"**{t(lang, 'try_failed')}** {why}"
    if finished is None and not alive:
        died = t(lang, "try_died", log=Path(folder) / CONSOLE_LOG, server_log=server_log())
        return f"**{t(lang, 'try_failed')}** {died}"
    if finished is not None:
        return t(lang, "try_done", status=t(lang, f"status_{finished['status']}"), done=done,
                 total=plan["total"] if plan else done, grid=finished.get("grid", ""), json=finished.get("json", ""))
    if plan is None:
        started = any(e["type"] == "started" for e in events)
        return t(lang, "try_loading" if started else "try_waiting", folder=folder)
    kept = t(lang, "try_kept", seconds=plan.get("ready_s", 0)) if plan.get("model_kept") else ""
    return t(lang, "try_progress", done=done, total=plan["total"], family=plan["family"], device=plan["device"]) + kept


def grid_html(lang: str, events: list[dict[str, Any]]) -> str:
    """The cells finished so far in their places, labelled in the page's language (grid.png keeps English)."""
    plan = next((e for e in events if e["type"] == "plan"), None)
    if plan is None:
        return ""
    rows, cols = _labels(lang, plan)
    cells = {(e["row"], e["col"]): e for e in events if e["type"] == "cell"}
    head = "".join(f"<th>{'<br>'.join(map(html.escape, label))}</th>" for label in cols)
    body = []
    for r, label in enumerate(rows):
        row = "".join(_cell(lang, cells.get((r, c))) for c in range(len(cols)))
        body.append(f"<tr><th>{'<br>'.join(map(html.escape, label))}</th>{row}</tr>")
    return f'<table class="danlu-compare danlu-try"><tr><th></th>{head}</tr>{"".join(body)}</table>'


def _labels(lang: str, plan: dict[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    """The rows' and columns' labels in lang, from the grid's settings (one layout: GridSpec's); a grid from
    before the plan carried its settings keeps the English it wrote."""
    if "settings" not in plan:
        return plan["rows"], plan["cols"]
    spec, words = GridSpec.from_json(plan["settings"]), {key: t(lang, f"try_label_{key}") for key in LABEL_WORDS}
    return spec.labels(plan["row_axes"], words), spec.labels(plan["col_axes"], words)


def _cell(lang: str, event: dict[str, Any] | None) -> str:
    if event is None or not Path(event["path"]).is_file():
        return "<td></td>"
    note = t(lang, "try_cell_effect", effect=event["effect"])
    note += "" if event["health"] == "ok" else f" · {_health(lang, event['health'])}"
    source = data_url(event["path"], THUMB_PX, 88)
    return f'<td><img src="{source}" title="{html.escape(event["path"])}"><br><small>{html.escape(note)}</small></td>'


def _health(lang: str, verdict: str) -> str:
    """A picture's health verdict (trainer/try_lora/effects.py: black, white, flat, nan, noise) in words."""
    return TEXT[lang].get(f"try_health_{verdict}", verdict)


def summary_frame(lang: str, record: dict[str, Any]) -> pd.DataFrame:
    """grid.json's summary with the column names, files and health verdicts in the page's language."""
    def cell(row: dict[str, Any], key: str) -> Any:
        if key == "file":
            return _file_label(lang, record, row)
        if key == "broken":
            return ", ".join(f"{_health(lang, verdict)} {n}" for verdict, n in row[key].items()) or "–"
        return row[key]

    rows = [[cell(row, key) for key in TABLE_COLUMNS] for row in record["summary"]]
    return pd.DataFrame(rows, columns=[t(lang, f"try_col_{key}") for key in TABLE_COLUMNS])


def _file_label(lang: str, record: dict[str, Any], row: dict[str, Any]) -> str:
    """A summary row's file: its name, and its epoch in lang (grid.json's `file` is LoraChoice.label, English)."""
    loras = record.get("settings", {}).get("loras", [])
    if not isinstance(row.get("lora"), int) or row["lora"] >= len(loras):
        return row["file"]
    lora = loras[row["lora"]]
    return lora["name"] if lora.get("epoch") is None else \
        f"{lora['name']} · {t(lang, 'try_label_epoch', epoch=lora['epoch'])}"


def chart_frame(lang: str, record: dict[str, Any]) -> pd.DataFrame:
    rows = [(row["strength"], row["effect"], _file_label(lang, record, row)) for row in record["summary"]
            if row["effect"] is not None]
    return pd.DataFrame(rows, columns=["strength", "effect", "file"]).astype({"strength": float, "effect": float})
