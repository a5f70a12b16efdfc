"""The Presets tab: the shipped and user presets, apply one (showing what changed), save the form as a preset,
import a preset or another tool's config by upload, and download a share-safe copy.

Applying a listed preset follows trainer/presets/format.apply_preset: the defaults, then the preset, then the
user's own paths and LoRA name. An uploaded file changes only the keys it names (format.import_settings); its
paths apply where they exist on this computer, the others are listed as not applied. The list of changes is the
form's own difference, before and after (form_changes). Files are data: YAML/JSON/TOML are parsed, never
executed.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from trainer.common.errors import ConfigError
from trainer.config.migrations import OLD_VERSION_KEY, VERSION_KEY
from trainer.demo.leftovers import DEMO_PATHS, demo_leftovers
from trainer.presets.collector import REPORT_TEXT
from trainer.presets.format import (
    Preset,
    apply_preset,
    changed_settings,
    import_settings,
    read_preset,
    share_safe,
    write_preset,
)
from trainer.presets.importers import import_file
from trainer.presets.library import list_presets, user_dir

from . import settings
from .fields import FIELD_SPECS, config_from_form, form_values
from .i18n import t
from .page import Page

UPLOAD_TYPES = [".yaml", ".yml", ".json", ".toml"]
DANLU_SUFFIXES = (".yaml", ".yml")  # a .json or .toml upload may be another tool's config: the importers decide


def build(page: Page) -> Callable[[], None]:
    """Builds the tab; returns its wiring (for Page.later: it needs every tab's fields)."""
    lang = page.form.lang
    with gr.Row():
        chooser = page.text(gr.Dropdown(choices=preset_choices(lang), label=t(lang, "preset_list"),
                                        elem_id="preset-list", scale=4), "preset_list")
        apply = page.text(gr.Button(t(lang, "preset_apply"), elem_id="preset-apply", scale=1), "preset_apply",
                          "value")
    about = gr.Markdown(elem_id="preset-about")
    upload = page.text(gr.File(label=t(lang, "preset_file"), file_types=UPLOAD_TYPES, type="filepath",
                               elem_id="preset-file"), "preset_file")
    with gr.Row():
        name = page.text(gr.Textbox(label=t(lang, "preset_name"), value="my_preset", elem_id="preset-name",
                                    scale=3), "preset_name")
        save = page.text(gr.Button(t(lang, "preset_save"), elem_id="preset-save", scale=1), "preset_save", "value")
        share = page.text(gr.Button(t(lang, "preset_share"), elem_id="preset-share", scale=1), "preset_share",
                          "value")
    demo = page.text(gr.Button(t(lang, "demo"), elem_id="preset-demo"), "demo", "value")
    download = page.text(gr.File(label=t(lang, "preset_download"), interactive=False, elem_id="preset-download"),
                         "preset_download")

    def wire() -> None:
        inputs = page.form.inputs
        chooser.change(lambda lang, path: describe(lang, path), [page.lang, chooser], about)
        page.then_review(apply.click(lambda lang, path, *values: apply_chosen(lang, path, values),
                                     [page.lang, chooser, *inputs], [page.message, *inputs]))
        page.then_review(upload.upload(lambda lang, path, *values: import_upload(lang, path, values),
                                       [page.lang, upload, *inputs], [page.message, *inputs]))
        save.click(lambda lang, title, *values: save_preset(lang, title, values), [page.lang, name, *inputs],
                   [page.message, download]).then(lambda lang: gr.update(choices=preset_choices(lang)), page.lang,
                                                  chooser)
        share.click(lambda lang, title, *values: share_preset(lang, title, values), [page.lang, name, *inputs],
                    [page.message, download])
        page.then_review(demo.click(lambda: form_values(settings.demo_form()), None, inputs))
        for key in DEMO_PATHS:  # the demo's own settings do not follow the user to their model or dataset
            page.then_review(page.form.components[key].change(lambda lang, *values: leave_demo(lang, values),
                                                              [page.lang, *inputs], [page.message, *inputs],
                                                              show_progress="hidden"))
        page.on_language(lambda lang: [gr.update(choices=preset_choices(lang))], [], [chooser])

    return wire


def preset_choices(lang: str) -> list[tuple[str, str]]:
    entries, _ = list_presets()
    return [(f"{e.preset.text('title', lang)} ({t(lang, 'preset_' + e.source)})", str(e.path)) for e in entries]


def describe(lang: str, path: str | None) -> str:
    if not path:
        return ""
    try:
        preset = read_preset(Path(path))
    except ConfigError as exc:
        return "\n".join(f"- {p.line_in(lang)}" for p in exc.problems)
    details = " · ".join(filter(None, [preset.model_family, f"{preset.vram_gb:g} GB" if preset.vram_gb else "",
                                       preset.author]))
    return f"**{preset.text('title', lang)}** · {details}\n\n{preset.text('description', lang)}"


def apply_chosen(lang: str, path: str | None, values: tuple) -> list[Any]:
    if not path:
        return [t(lang, "preset_none_chosen"), *_keep()]
    try:
        preset = read_preset(Path(path))
    except ConfigError as exc:
        return ["\n".join(f"- {p.line_in(lang)}" for p in exc.problems), *_keep()]
    config, _ = apply_preset(preset, config_from_form(list(values)))
    return _applied(lang, config, values, t(lang, "preset_applied", name=preset.text("title", lang)))


def import_upload(lang: str, path: str | None, values: tuple) -> list[Any]:
    """A Danlu preset or config (YAML, or any file with a version) or another tool's config (through the
    importers, whose report lists every value they changed, filled in or could not map): only the keys the file
    names change, and its paths that this computer does not have are listed as not applied."""
    if not path:
        return ["", *_keep()]
    source = Path(path)
    try:
        if source.suffix.lower() in DANLU_SUFFIXES or _has_version(source):
            settings, report, kind = read_preset(source, every_key=True).settings, [], "Danlu"
        else:
            result = import_file(source)
            report = result.report({line: t(lang, f"preset_report_{line}") for line in REPORT_TEXT}, lang)
            settings, kind = result.named_settings(), result.format
    except ConfigError as exc:
        return ["\n".join(f"- {p.line_in(lang)}" for p in exc.problems), *_keep()]
    config, skipped = import_settings(settings, config_from_form(list(values)))
    report += [t(lang, "preset_report_path" if value not in (None, "") else "preset_report_path_empty",
                 setting=key, value=value) for key, value in skipped.items()]
    message = t(lang, "preset_imported", name=source.name, format=kind)
    if report:
        message += f"\n\n{t(lang, 'preset_report', n=len(report))}\n\n" + "\n".join(report)
    return _applied(lang, config, values, message)


def leave_demo(lang: str, values: tuple) -> list[Any]:
    """The demo's own settings back to their defaults once the form trains on another base model or dataset
    (trainer/demo/leftovers.py), with the list of what changed; nothing while the form is the demo's."""
    form = config_from_form(list(values))
    reset = demo_leftovers(form, settings.demo_root())
    if not reset:
        return [gr.skip(), *_keep()]
    return _applied(lang, {**form, **reset}, values, t(lang, "demo_left"))


def save_preset(lang: str, title: str, values: tuple) -> list[Any]:
    """The form's non-default keys as a user preset (paths included: it stays on this computer); an earlier preset
    of that name is kept."""
    stem = _file_stem(title)
    preset = Preset(stem, changed_settings(config_from_form(list(values))), {lang: title or stem})
    path = write_preset(preset, _unused(user_dir() / f"{stem}.yaml"))
    return [t(lang, "preset_saved", path=path), str(path)]


def share_preset(lang: str, title: str, values: tuple) -> list[Any]:
    """A copy to share: without this computer's paths (named in the message), offered for download."""
    stem = _file_stem(title)
    shared, removed = share_safe(changed_settings(config_from_form(list(values))))
    folder = Path(tempfile.mkdtemp(prefix="danlu-share-"))
    path = write_preset(Preset(stem, shared, {lang: title or stem}), folder / f"{stem}.yaml")
    left_out = ", ".join(removed) or "–"
    return [t(lang, "preset_shared", path=path.name, keys=left_out), str(path)]


def _applied(lang: str, config: dict[str, Any], values: tuple, message: str) -> list[Any]:
    """The form showing `config`, and the message listing every field that changed, with its old and new value."""
    before, after = config_from_form(list(values)), form_values(config)
    changed = form_changes(before, config_from_form(after))
    if not changed:
        return [f"{message}\n\n{t(lang, 'preset_no_change')}", *_keep()]
    lines = "\n".join(f"- `{key}`: `{old!r}` → `{new!r}`" for key, (old, new) in changed.items())
    summary = t(lang, "preset_changed", n=len(changed))
    return [f"{message}\n\n<details><summary>{summary}</summary>\n\n{lines}\n\n</details>", *after]


def form_changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """key -> (old, new) for every field whose value differs between two states of the form (config_from_form):
    what the page lists is what the form shows, not what a preset meant to set."""
    return {key: (before[key], after[key]) for key in after if after[key] != before.get(key)}


def _keep() -> list[Any]:
    return [gr.skip()] * len(FIELD_SPECS)


def _has_version(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError:
        return False
    return VERSION_KEY in text or OLD_VERSION_KEY in text


def _file_stem(title: str) -> str:
    return re.sub(r"[^\w.-]+", "_", (title or "").strip()).strip("._") or "preset"


def _unused(path: Path) -> Path:
    candidate, number = path, 2
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
        number += 1
    return candidate
