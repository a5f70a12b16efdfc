"""The learning-rate finder in the Model effect tab: a short D-Adaptation/Prodigy probe of the form's config
(`python -m trainer lr-find CONFIG --json` in a child process), its d·lr curve, and the suggestion applied in one
click (optimizer, learning rates)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from trainer.common.errors import UserError
from trainer.config.io import config_to_yaml
from trainer.experiments.lr_find import PROBES, TARGETS
from trainer.run import child

from .fields import FIELD_SPECS, config_from_form, form_values
from .i18n import t
from .page import Page
from .review import review

FIND_TIMEOUT_S = 3600


def build(page: Page) -> Callable[[], None]:
    """Builds the finder's box; returns its wiring (for Page.later: it needs every tab's fields)."""
    lang = page.form.lang
    with page.text(gr.Accordion(t(lang, "lrf_title"), open=False, elem_id="lr-finder"), "lrf_title"):
        page.text(gr.Markdown(t(lang, "lrf_intro")), "lrf_intro", "value")
        with gr.Row():
            probe = page.text(gr.Radio(list(PROBES), value=next(iter(PROBES)), label=t(lang, "lrf_probe"),
                                       elem_id="lrf-probe"), "lrf_probe")
            steps = page.text(gr.Number(None, precision=0, minimum=10, label=t(lang, "lrf_steps"),
                                        elem_id="lrf-steps"), "lrf_steps")
            find = page.text(gr.Button(t(lang, "lrf_run"), elem_id="lrf-run"), "lrf_run", "value")
        curve = page.text(gr.LinePlot(x="step", y="d·lr", label=t(lang, "lrf_curve"), height=220,
                                      elem_id="lrf-curve"), "lrf_curve")
        result = gr.Markdown(elem_id="lrf-result")
        with gr.Row():
            target = page.text(gr.Radio(list(TARGETS), value=next(iter(TARGETS)), label=t(lang, "lrf_target"),
                                        elem_id="lrf-target"), "lrf_target")
            apply = page.text(gr.Button(t(lang, "lrf_apply"), variant="primary", elem_id="lrf-apply"), "lrf_apply",
                              "value")
    found = gr.State(None)

    def wire() -> None:
        inputs = page.form.inputs
        find.click(lambda lang, kind, n, *values: run_finder(lang, kind, n, values), [page.lang, probe, steps, *inputs],
                   [curve, result, found], concurrency_id="lr-find")
        page.then_review(apply.click(lambda lang, answer, name, *values: apply_suggestion(lang, answer, name, values),
                                     [page.lang, found, target, *inputs], [page.message, *inputs]))

    return wire


def run_finder(lang: str, probe: str, steps: float | None, values: tuple) -> list[Any]:
    """Checks the form, runs the probe in a child process and returns the curve, the report and the answer."""
    data = config_from_form(list(values))
    checked = review(data, full=True)
    if checked.problems:
        return [gr.skip(), "\n".join(f"- {p}" for p in checked.problems), None]
    folder = Path(tempfile.mkdtemp(prefix="danlu-lrfind-"))
    config_file = folder / "config.yaml"
    config_file.write_text(config_to_yaml(checked.config), encoding="utf-8")
    args = ["lr-find", config_file, "--optimizer", probe, "--json", *(["--steps", str(int(steps))] if steps else [])]
    try:
        done = child.run(args, timeout_s=FIND_TIMEOUT_S)
    except UserError as exc:  # it could not start or ran past the timeout
        return [gr.skip(), t(lang, "lrf_failed", reason=exc.message), None]
    if not done.ok:
        reason = [str(problem) for problem in done.problems] or done.tail(5)
        return [gr.skip(), t(lang, "lrf_failed", reason="\n".join(reason)), None]
    answer = done.json
    frame = pd.DataFrame(answer["curve"], columns=["step", "d·lr"])
    return [frame, report(lang, answer), answer]


def report(lang: str, answer: dict[str, Any]) -> str:
    low, high = answer["text_encoder_range"]
    lion = answer["settings"]["Lion"]["unet_lr"]
    text = t(lang, "lrf_report", plateau=f"{answer['plateau']:.3g}", lion=f"{lion:.3g}", low=f"{low:.3g}",
             high=f"{high:.3g}", steps=answer["steps"], probe=answer["optimizer"])
    return text if answer.get("settled", True) else f"{text}\n\n{t(lang, 'lrf_unsettled')}"


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
