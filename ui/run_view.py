"""A run's state as the Run tab shows it: status line, progress bar, banners, curves, samples, saved files.

Pure rendering of trainer/run_state.RunState into HTML, Markdown and tables; the Gradio wiring is in ui/run_tab.py.
"""

from __future__ import annotations

import hashlib
import html
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from trainer.run.state import COMPLETED, FAILED, RUNNING, STARTING, STOPPED, RunState

from .i18n import TEXT, t
from .log_lines import log_text
from .wording import gui_wording

STATUS_KEYS = {STARTING: "status_starting", RUNNING: "status_running", COMPLETED: "status_completed",
               STOPPED: "status_stopped", FAILED: "status_failed"}
# Gradio serves files only from the working and temp folders: previews are copied there to be shown.
PREVIEW_CACHE = Path(tempfile.gettempdir()) / "danlu-previews"
TITLE = "Danlu 丹炉"  # the browser tab's title (ui/app.py), behind the progress while a training runs


def status_markdown(state: RunState | None, run_dir: Path | None, lang: str) -> str:
    if state is None or run_dir is None:
        return t(lang, "status_idle")
    return f"**{t(lang, STATUS_KEYS[state.status])}** · {t(lang, 'run_dir')}: `{run_dir}`"


def run_line(state: RunState | None, run_dir: Path | None, lang: str, ready: bool, demo: bool) -> str:
    """The bar's one line: where to begin when nothing ran in this output folder, else the run's state. Its
    data-title is the browser tab's title (ui/page_head.html): the progress while a run runs."""
    if state is None or run_dir is None:
        key = ("line_demo" if demo else "line_idle") if ready else "line_problems"
        return _line("idle", TITLE, t(lang, key))
    status = t(lang, STATUS_KEYS[state.status])
    if state.is_over:
        return _line(state.status, f"{status} · {TITLE}", t(lang, "line_over", status=status, run_dir=run_dir.name))
    percent = int(100 * state.fraction)
    text = t(lang, "line_running", status=status, percent=percent, step=state.step, total=state.total_steps or "?",
             eta=_duration(state.eta_s))
    return _line(state.status, f"{percent}% · {TITLE}", text)


def _line(status: str, title: str, text: str) -> str:
    return (f'<div class="danlu-run-line" data-status="{status}" data-title="{html.escape(title)}">'
            f"{html.escape(text)}</div>")


def progress_html(state: RunState | None, lang: str) -> str:
    if state is None:
        return ""
    total = state.total_steps or 0
    speed = f"{state.it_s:.2f} it/s" if state.it_s else "– it/s"
    text = t(lang, "progress", step=state.step, total=total or "?", epoch=state.epoch, epochs=state.epochs or "?",
             speed=speed, eta=_duration(state.eta_s) if state.status == RUNNING else "–")
    percent = round(100 * state.fraction, 1)
    return (f'<div class="danlu-progress" data-status="{state.status}" data-step="{state.step}">'
            f'<div class="danlu-progress-bar" style="width:{percent}%"></div>'
            f'<span class="danlu-progress-text">{html.escape(text)}</span></div>')


def banners_html(state: RunState | None, lang: str) -> str:
    if state is None:
        return ""
    items = []
    for banner in state.banners:
        zh = lang.startswith("zh")
        message, hint_text = (banner.message_zh or banner.message, banner.hint_zh or banner.hint) if zh else \
            (banner.message, banner.hint)
        message, hint_text = gui_wording(message, lang), gui_wording(hint_text, lang)
        hint = f"<br><b>{t(lang, 'hint')}:</b> {html.escape(hint_text)}" if hint_text else ""
        title = html.escape(banner_title(banner.code or banner.level, lang))
        level, code = html.escape(banner.level), html.escape(banner.code)
        count = f" {html.escape(t(lang, 'banner_count', n=banner.count))}" if banner.count > 1 else ""
        items.append(f'<div class="danlu-banner danlu-{level}" data-code="{code}" data-count="{banner.count}">'
                     f"<b>{title}</b>{count}: {html.escape(message)}{hint}</div>")
    if state.log_tail:
        items.append('<pre class="danlu-log-tail">' + html.escape(log_text(state.log_tail, lang)) + "</pre>")
    return "\n".join(items)


def banner_title(code: str, lang: str) -> str:
    """A health or error code in words (the code itself for one the page has no words for)."""
    return TEXT[lang].get(f"health_{code}", code)


def loss_frame(state: RunState | None, lang: str) -> pd.DataFrame:
    rows = [(s, v, t(lang, "loss_raw")) for s, v in (state.losses if state else [])]
    rows += [(s, v, t(lang, "loss_smoothed")) for s, v in (state.smoothed_losses if state else [])]
    return pd.DataFrame(rows, columns=["step", "loss", "series"]).astype({"step": int, "loss": float})


def lr_frame(state: RunState | None, lang: str) -> pd.DataFrame:
    """The scheduler's LR, and for D-Adaptation/Prodigy the adapted step size d·lr beside it."""
    rows = [(s, v, t(lang, "series_lr")) for s, v in (state.lrs if state else [])]
    rows += [(s, v, t(lang, "series_dlr")) for s, v in (state.effective_lrs if state else [])]
    return pd.DataFrame(rows, columns=["step", "lr", "series"]).astype({"step": int, "lr": float})


def gallery_items(state: RunState | None, run_dir: Path | None, lang: str) -> list[tuple[str, str]]:
    """(image path, caption) newest epoch first, each preview copied where Gradio may serve it."""
    if state is None or run_dir is None:
        return []
    prompts = {s.path: s.prompt for s in state.sample_list}
    items = []
    for epoch, paths in state.samples:
        for path in paths:
            shown = _servable(Path(path), run_dir)
            if shown is not None:
                items.append((str(shown), f"{t(lang, 'epoch_label', epoch=epoch)} · {prompts.get(path, '')}"))
    return items


def checkpoints_markdown(state: RunState | None) -> str:
    if state is None or not state.checkpoints:
        return ""
    return "\n".join(f"- `{c.path}` (epoch {c.epoch}, step {c.step})" for c in reversed(state.checkpoints))


def _servable(path: Path, run_dir: Path) -> Path | None:
    if not path.is_absolute():
        path = run_dir / path
    if not path.is_file():
        return None
    folder = PREVIEW_CACHE / hashlib.sha1(str(run_dir).encode()).hexdigest()[:12]
    copy = folder / path.name
    if not copy.exists():
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
    return copy


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
