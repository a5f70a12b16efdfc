"""The learning-rate finder in the Model effect tab: a short D-Adaptation/Prodigy probe of the form's config
(`python -m trainer lr-find CONFIG --json --run-dir RUN` in a child process), its d·lr curve and progress while it
runs, a Stop that ends it cleanly (RUN/STOP, as a training's), and the suggestion applied in one click (optimizer,
learning rates)."""

from __future__ import annotations

import math
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from trainer.common.errors import UserError
from trainer.config.io import config_to_yaml
from trainer.experiments.lr_find import PROBES, TARGETS
from trainer.run import child
from trainer.run.events import STOP_FILE, new_run_dir
from trainer.run.state import RunReader

from .fields import FIELD_SPECS, config_from_form, form_values
from .i18n import t
from .live import chart_keys, chart_titles
from .page import Page
from .review import review
from .run_view import progress_html
from .try_server import release_model

FIND_TIMEOUT_S = 3600
POLL_S = 1.0  # how often the page shows the probe's progress


def build(page: Page) -> Callable[[], None]:
    """Builds the finder's box; returns its wiring (for Page.later: it needs every tab's fields)."""
    lang = page.form.lang
    with page.text(gr.Accordion(t(lang, "lrf_title"), open=False, elem_id="lr-finder"), "lrf_title"):
        page.text(gr.Markdown(t(lang, "lrf_intro")), "lrf_intro", "value")
        with gr.Row():
            probe = page.text(gr.Radio(list(PROBES), value=next(iter(PROBES)), label=t(lang, "lrf_probe"),
                                       elem_id="lrf-probe"), "lrf_probe")
            # No `minimum`: Gradio would refuse a bad value with its own English toast; run_finder says it.
            steps = page.text(page.text(gr.Number(0, precision=0, label=t(lang, "lrf_steps"), elem_id="lrf-steps",
                                                  info=t(lang, "lrf_steps_info")), "lrf_steps"), "lrf_steps_info",
                              "info")
            find = page.text(gr.Button(t(lang, "lrf_run"), elem_id="lrf-run"), "lrf_run", "value")
            stop = page.text(gr.Button(t(lang, "lrf_stop"), variant="stop", interactive=False, elem_id="lrf-stop"),
                             "lrf_stop", "value")
        progress = gr.HTML(elem_id="lrf-progress")
        curve = page.text(gr.LinePlot(x="step", y="d·lr", label=t(lang, "lrf_curve"), height=220,
                                      elem_id="lrf-curve", **chart_titles(lang, "series_dlr")),
                          "lrf_curve", **chart_keys("series_dlr"))
        result = gr.Markdown(elem_id="lrf-result")
        with gr.Row():
            target = page.text(gr.Radio(list(TARGETS), value=next(iter(TARGETS)), label=t(lang, "lrf_target"),
                                        elem_id="lrf-target"), "lrf_target")
            apply = page.text(gr.Button(t(lang, "lrf_apply"), variant="primary", elem_id="lrf-apply"), "lrf_apply",
                              "value")
    found, running = gr.State(None), gr.State(None)  # the last answer; the run folder of the probe running

    def wire() -> None:
        inputs = page.form.inputs

        def start(lang: str, kind: str, n: float | None, *values: Any) -> Iterator[list[Any]]:
            yield from run_finder(lang, kind, n, values)

        find.click(start, [page.lang, probe, steps, *inputs], [progress, curve, result, found, running, find, stop],
                   concurrency_id="lr-find")
        stop.click(stop_finder, running, stop)
        page.then_review(apply.click(lambda lang, answer, name, *values: apply_suggestion(lang, answer, name, values),
                                     [page.lang, found, target, *inputs], [page.message, *inputs]))

    return wire


def run_finder(lang: str, probe: str, steps: float | None, values: tuple) -> Iterator[list[Any]]:
    """Checks the form, starts the probe in a child process and yields its progress and curve about once a second
    until it ends; then the curve, the report and the answer. Outputs: progress, curve, report, answer, the run
    folder while it runs (for Stop), and the Start and Stop buttons."""
    idle = [gr.update(interactive=True), gr.update(interactive=False)]
    if steps is not None and (steps < 0 or not float(steps).is_integer()):
        yield ["", gr.skip(), t(lang, "lrf_bad_steps"), gr.skip(), None, *idle]
        return
    checked = review(config_from_form(list(values)), full=True)
    if checked.problems:
        yield ["", gr.skip(), "\n".join(f"- {p.line_in(lang)}" for p in checked.problems), gr.skip(), None, *idle]
        return
    config_file = Path(tempfile.mkdtemp(prefix="danlu-lrfind-")) / "config.yaml"
    config_file.write_text(config_to_yaml(checked.config), encoding="utf-8")
    run_dir = new_run_dir(Path(checked.config.output_dir or config_file.parent).expanduser())
    args = ["lr-find", config_file, "--optimizer", probe, "--json", "--run-dir", run_dir,
            *(["--steps", str(int(steps))] if steps else [])]
    probe_run = _Probe(args)
    busy = [gr.update(interactive=False), gr.update(interactive=True)]
    reader = RunReader(run_dir)
    yield ["", None, t(lang, "lrf_running", run_dir=run_dir), None, str(run_dir), *busy]
    while not probe_run.done.wait(POLL_S):
        state = reader.update()
        note = t(lang, "lrf_stopping") if (run_dir / STOP_FILE).exists() else gr.skip()
        yield [progress_html(state, lang), curve_frame(state.effective_lrs), note, gr.skip(), gr.skip(), *busy]
    state = reader.update(alive=False)
    yield [progress_html(state, lang), *finished(lang, probe_run), None, *idle]


class _Probe:
    """The blocking child.run in a thread, so the page can show progress meanwhile."""

    def __init__(self, args: list[Any]):
        self.outcome: child.ChildResult | UserError | None = None
        self.done = threading.Event()
        release_model()
        threading.Thread(target=self._run, args=(args,), daemon=True, name="lr-find").start()

    def _run(self, args: list[Any]) -> None:
        try:
            self.outcome = child.run(args, timeout_s=FIND_TIMEOUT_S)
        except UserError as exc:  # it could not start or ran past the timeout
            self.outcome = exc
        finally:
            self.done.set()


def finished(lang: str, probe_run: _Probe) -> list[Any]:
    """The curve, the report and the answer of an ended probe (or why it failed)."""
    done = probe_run.outcome
    if isinstance(done, UserError):
        return [gr.skip(), t(lang, "lrf_failed", reason=done.problems[0].line_in(lang)), None]
    if not done.ok:
        reason = [problem.line_in(lang) for problem in done.problems] or done.tail(5)
        return [gr.skip(), t(lang, "lrf_failed", reason="\n".join(reason)), None]
    answer = done.json
    return [curve_frame(answer["curve"]), report(lang, answer), answer]


def curve_frame(points: list) -> pd.DataFrame:
    finite = [(step, value) for step, value in points if math.isfinite(value) and value > 0]
    return pd.DataFrame(finite, columns=["step", "d·lr"]).astype({"step": int, "d·lr": float})


def stop_finder(run_dir: str | None) -> Any:
    """Asks the running probe to stop (RUN/STOP): it ends after its step, and the finder suggests from the curve
    so far. Only the running finder writes its report, so its last word is never overwritten."""
    if run_dir:
        (Path(run_dir) / STOP_FILE).touch()
    return gr.update(interactive=False)


def report(lang: str, answer: dict[str, Any]) -> str:
    low, high = answer["text_encoder_range"]
    settings = answer["settings"]
    text = t(lang, "lrf_report", plateau=f"{answer['plateau']:.3g}", adamw=f"{settings['AdamW']['unet_lr']:.3g}",
             lion=f"{settings['Lion']['unet_lr']:.3g}", low=f"{low:.3g}", high=f"{high:.3g}", steps=answer["steps"],
             probe=answer["optimizer"])
    notes = [text]
    ended = answer.get("ended", "completed")
    if ended != "completed":
        notes.append(t(lang, f"lrf_{ended}", steps=answer["steps"]))
    if not answer.get("settled", True):
        notes.append(t(lang, "lrf_unsettled"))
    for name, capped in answer.get("capped", {}).items():
        notes.append(t(lang, "lrf_capped", target=name, found=f"{capped['found']:.3g}",
                       ceiling=f"{capped['ceiling']:.3g}", rate=f"{settings[name]['unet_lr']:.3g}"))
    return "\n\n".join(notes)


def apply_suggestion(lang: str, answer: dict[str, Any] | None, target: str, values: tuple) -> list[Any]:
    keep = [gr.skip()] * len(FIELD_SPECS)
    if not answer:
        return [t(lang, "lrf_nothing"), *keep]
    settings = answer["settings"].get(target)
    if not settings:
        return [t(lang, "lrf_nothing"), *keep]
    data = {**config_from_form(list(values)), **settings}
    changed = ", ".join(f"`{key}` = `{value}`" for key, value in settings.items())
    return [t(lang, "lrf_applied", target=target, changed=changed), *form_values(data)]
