"""The parts of the page that follow the form as it is edited: detected model, dataset check, step plan, LR
chart, warnings, and problems shown at their fields. Check and Start use the same views with the full check.
The LR curve and the GPU's abilities come from the GUI's worker process (ui/review.py worker()); the memory
estimate beside the plan is torch-free (trainer/checks/memory.py)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from trainer.checks.advice import config_advice
from trainer.checks.memory import estimate, fit_report
from trainer.common.errors import UserError
from trainer.run.launch import describe_launch

from .charts import colored
from .dataset_report import dataset_report
from .i18n import t
from .review import Review, worker
from .wording import gui_wording

LIVE_VIEWS = ("family", "dataset", "plan", "advice", "lr")


def chart_keys(y_key: str, color_key: str = "axis_curve") -> dict[str, str]:
    """A LinePlot's axis and legend titles as text keys (else Gradio shows the data's column names): steps
    across, y_key up, color_key over the legend. page.text(plot, label_key, **chart_keys(...)) relabels them."""
    return {"x_title": "axis_step", "y_title": y_key, "color_title": color_key}


def chart_titles(lang: str, y_key: str, color_key: str = "axis_curve") -> dict[str, str]:
    """chart_keys in lang, for the LinePlot's creation."""
    return {name: t(lang, key) for name, key in chart_keys(y_key, color_key).items()}


def live_outputs(page, views: dict[str, Any]) -> list[Any]:
    """What render_review fills: the views, the shown-problems state (ui.page.Page.shown_errors), the review shown
    (Page.reviewed: what a language switch words anew), the fields."""
    return [views[name] for name in LIVE_VIEWS] + [page.shown_errors, page.reviewed, *page.form.inputs]


def render_review(page, result: Review, lang: str, shown: dict[str, str] | None) -> list[Any]:
    """The live views, the new shown-problems state, the review and the fields' help or problem: with `shown`,
    only the fields whose problem changed; with None, every field."""
    errors = result.errors_in(lang)
    return review_views(result, lang) + [errors, result, *page.form.field_updates(errors, lang, shown)]


def review_views(result: Review, lang: str) -> list[Any]:
    """The LIVE_VIEWS of a review, in lang."""
    return [family_markdown(result, lang), report_markdown(result, lang), plan_markdown(result, lang),
            advice_markdown(result, lang), lr_plot(result, lang)]


def family_markdown(result: Review, lang: str) -> str:
    label = result.family_label
    return t(lang, "family_detected", family=label) if label else t(lang, "family_unknown")


def plan_markdown(result: Review, lang: str) -> str:
    plan = t(lang, "plan_missing") if result.plan is None else "```text\n" + result.plan.describe(lang) + "\n```"
    return plan + memory_markdown(result, lang) + launch_markdown(result, lang)


def launch_markdown(result: Review, lang: str) -> str:
    """The processes `train` will start and on which GPUs, when there is a choice (several processes or GPUs)."""
    try:
        gpus = worker().gpu_list()
    except UserError:  # a worker that could not answer: say nothing rather than something wrong
        return ""
    if result.config is None or (not result.config.distributed and len(gpus) < 2):
        return ""
    return f"\n\n**{t(lang, 'launch_title')}**\n\n```text\n{describe_launch(result.config, gpus, lang)}\n```"


def memory_markdown(result: Review, lang: str) -> str:
    """The memory estimate compared with this machine's GPU, and what would make it fit."""
    if result.config is None:
        return ""
    report = fit_report(result.config, _gpu_memory_gib(), result.family, lang)
    return f"\n\n**{t(lang, 'memory_title')}**\n\n```text\n{report}\n```"


def memory_warning(result: Review, lang: str) -> str:
    """A warning when the estimate exceeds this machine's GPU; empty when it fits or either is unknown."""
    vram = _gpu_memory_gib()
    found = estimate(result.config, result.family) if result.config is not None else None
    if vram is None or found is None or found.fits(vram):
        return ""
    return t(lang, "memory_warning", peak=found.peak_gib, vram=vram)


def _gpu_memory_gib() -> float | None:
    try:
        return worker().gpu_memory_gib()
    except UserError:  # a worker that could not answer: compare with nothing
        return None


def report_markdown(result: Review, lang: str) -> str:
    if result.scan is None:
        return ""
    return dataset_report(result.scan, result.plan, lang)


def advice_markdown(result: Review, lang: str) -> str:
    if result.config is None:
        return ""
    try:
        cuda, bf16_supported = worker().gpu_facts()
    except UserError:  # unknown: the advice that needs them stays quiet
        cuda = bf16_supported = None
    items = [gui_wording(a.text(lang), lang) for a in config_advice(result.config, family=result.family, cuda=cuda,
                                                  bf16_supported=bf16_supported)]
    if not items:
        return ""
    return f"**⚠ {t(lang, 'warnings_title')}**\n\n" + "\n".join(f"- {item}" for item in items)


def problems_markdown(result: Review, lang: str) -> str:
    if not result.problems:
        return ""
    lines = (gui_wording(problem.line_in(lang), lang) for problem in result.problems)
    return f"**{t(lang, 'problems_title')}**\n\n" + "\n".join(f"- {line}" for line in lines)


def lr_plot(result: Review, lang: str) -> Any:
    """The LR curve of the planned steps (the real scheduler, in the worker), or an empty chart with the reason
    as caption."""
    if result.config is None or result.plan is None:
        return colored(_lr_frame({}), "group")
    try:
        curves = worker().lr_curve(result.config, result.plan.total_steps, family=result.family)
    except UserError as exc:  # a scheduler the config names wrongly; a worker that could not answer
        return colored(_lr_frame({}), "group", caption="; ".join(p.line_in(lang) for p in exc.problems))
    caption = "" if curves else t(lang, "lr_relative")
    return colored(_lr_frame(curves), "group", caption=caption)


def _lr_frame(curves: dict[str, list[tuple[int, float]]]) -> pd.DataFrame:
    rows = [(step, lr, group) for group, points in curves.items() for step, lr in points]
    return pd.DataFrame(rows, columns=["step", "lr", "group"])
