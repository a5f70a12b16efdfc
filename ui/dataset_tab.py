"""The Dataset tab: prepare the images and captions before training (docs/quickstart.md, "Prepare the dataset").

The folder is the form's train_data_dir (the Paths tab's field; captions use its caption_extension): a gallery of
its images with their captions, one caption edited in place, a tagger or captioner run on all or the chosen images
(ui/caption_job.py: a `caption` child), bulk edits previewed as a file / before / after table and applied with a
backup (trainer/dataset/caption_edit.py; Undo puts back the last operation, whatever made it), the tag-frequency
table and the image checks (trainer/dataset/image_check.py). Every change bumps `version`: the tab's views are
read again and the page's review runs, so the Paths tab's dataset check and the Steps tab's plan follow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from trainer.common.errors import UserError
from trainer.dataset import caption_edit as edits
from trainer.dataset.image_check import Limits, check_images
from trainer.tagging.options import DEFAULT_MODELS, FLORENCE_TASKS, KINDS, WD14
from trainer.tagging.run import MODES

from . import caption_job as jobs
from . import dataset_views as views
from .fields import form_values
from .i18n import t
from .page import Page, form_data

POLL_S = 1.0
# The taggers users know from kohya_ss and lora-scripts (any other repo id or a local folder may be typed).
WD14_REPOS = tuple(f"SmilingWolf/wd-{name}" for name in (
    "swinv2-tagger-v3", "vit-tagger-v3", "convnext-tagger-v3", "vit-large-tagger-v3", "eva02-large-tagger-v3",
    "v1-4-moat-tagger-v2", "v1-4-swinv2-tagger-v2", "v1-4-convnextv2-tagger-v2", "v1-4-convnext-tagger-v2",
    "v1-4-vit-tagger-v2"))
MODEL_CHOICES = list(dict.fromkeys((DEFAULT_MODELS[WD14], *WD14_REPOS, *DEFAULT_MODELS.values(),
                                    "florence-community/Florence-2-base", "Salesforce/blip-image-captioning-base")))
SETTING_KEYS = ("model", "kind", "mode", "device", "batch_size", "general_threshold", "character_threshold", "first",
                "exclude", "rating", "keep_underscores", "max_tags", "task", "max_length", "num_beams", "prefix",
                "suffix")  # the tagger's fields, in the order handlers receive them (caption_job.caption_args' keys)
EDIT_KEYS = ("prefix", "replace", "regex", "remove", "min_count", "dedupe", "sort")  # the bulk edit's, likewise


def build(page: Page, tab: gr.Tab) -> Callable[[], None]:
    lang, text = page.form.lang, page.text
    text(gr.Markdown(t(lang, "ds_intro")), "ds_intro", "value")
    with gr.Row():
        folders = gr.Markdown(elem_id="ds-folders")
        with gr.Column(scale=1):
            folder = text(gr.Dropdown([(t(lang, "ds_all_folders", n=0), views.ALL)], value=views.ALL,
                                      label=t(lang, "ds_folder"), elem_id="ds-folder"), "ds_folder")
            chosen = text(gr.Dropdown([], value=[], multiselect=True, label=t(lang, "ds_chosen"),
                                      elem_id="ds-chosen"), "ds_chosen")
            refresh = text(gr.Button(t(lang, "ds_refresh"), elem_id="ds-refresh"), "ds_refresh", "value")
    gallery = text(gr.Gallery(label=t(lang, "ds_gallery"), columns=6, height=440, object_fit="contain",
                              allow_preview=False, elem_id="ds-gallery"), "ds_gallery")
    with gr.Row():
        editing_name = gr.Markdown(elem_id="ds-editing")  # the caption file's name, once a picture is clicked
        caption = text(gr.Textbox(label=t(lang, "ds_caption"), placeholder=t(lang, "ds_pick_image"), lines=3, scale=4,
                                  elem_id="ds-caption"), "ds_caption", placeholder="ds_pick_image")
        with gr.Column(scale=1, min_width=160):
            save = text(gr.Button(t(lang, "ds_save"), variant="primary", elem_id="ds-save"), "ds_save", "value")
            choose = text(gr.Button(t(lang, "ds_choose"), elem_id="ds-choose"), "ds_choose", "value")
    editor_status = gr.Markdown(elem_id="ds-editor-status")
    settings, start, stop, progress, tag_status = _tagger(page)
    edit, preview, apply, undo, edit_status, changes = _bulk(page)
    with gr.Row():
        frequency = text(gr.Dataframe(label=t(lang, "ds_frequency"), interactive=False, max_height=420,
                                      elem_id="ds-frequency"), "ds_frequency")
        checks = gr.Markdown(elem_id="ds-checks")
    shown, editing, job, seen, version = gr.State([]), gr.State(""), gr.State(""), gr.State(None), gr.State(0.0)
    timer = gr.Timer(POLL_S, active=False)

    def wire() -> None:
        values = page.form.inputs
        shown_views = [folders, folder, chosen, gallery, shown, frequency, checks]
        read = dict(fn=refresh_views, inputs=[page.lang, folder, chosen, *values], outputs=shown_views,
                    show_progress="minimal")
        gr.on([tab.select, folder.input], **read)
        page.then_review(refresh.click(**read))  # files added or removed by hand: the plan follows too
        page.then_review(version.change(**{**read, "show_progress": "hidden"}))
        page.on_language(relabel_views, [shown, folder, chosen, page.reviewed], shown_views)
        gallery.select(pick, [page.lang, shown, *values], [editing, editing_name, caption], show_progress="hidden")
        save.click(save_caption, [page.lang, editing, caption, *values], [editor_status, version])
        choose.click(choose_image, [editing, chosen], chosen, show_progress="hidden")
        start.click(start_tagging, [page.lang, job, chosen, *(settings[key] for key in SETTING_KEYS), *values],
                    [tag_status, progress, job, seen, timer])
        stop.click(stop_tagging, [page.lang, job], tag_status)
        tab.select(find_tagging, job, [job, seen, timer], show_progress="hidden")
        timer.tick(poll, [page.lang, job, seen], [progress, tag_status, seen, version, timer], show_progress="hidden")
        planned = [page.lang, chosen, *(edit[key] for key in EDIT_KEYS), *values]
        preview.click(preview_edit, planned, [edit_status, changes])
        apply.click(apply_edit, planned, [edit_status, changes, version])
        undo.click(undo_last, [page.lang, *values], [edit_status, changes, version])
        frequency.select(add_removed_tag, edit["remove"], edit["remove"], show_progress="hidden")

    return wire


def _tagger(page: Page) -> tuple[dict[str, Any], Any, Any, Any, Any]:
    """The tagger's settings (caption_job.caption_args' keys), Start, Stop, the progress bar and the status."""
    lang, text = page.form.lang, page.text
    tag, cap = jobs.TAG_DEFAULTS, jobs.CAPTION_DEFAULTS
    with text(gr.Accordion(t(lang, "ds_tagger"), open=True, elem_id="ds-tagger"), "ds_tagger"):
        with gr.Row():
            s = {"model": text(gr.Dropdown(MODEL_CHOICES, value=MODEL_CHOICES[0], allow_custom_value=True,
                                           label=t(lang, "ds_model"), scale=3, elem_id="ds-model"), "ds_model"),
                 "kind": text(gr.Dropdown(["auto", *KINDS], value="auto", label=t(lang, "ds_kind"),
                                          elem_id="ds-kind"), "ds_kind"),
                 "mode": text(gr.Radio(list(MODES), value=MODES[0], label=t(lang, "ds_mode"),
                                       info=t(lang, "ds_mode_info"), elem_id="ds-mode"),
                              "ds_mode", info="ds_mode_info")}
        with gr.Row():
            s["general_threshold"] = text(gr.Slider(0, 1, tag.general_threshold, step=0.01, elem_id="ds-general",
                                                    label=t(lang, "ds_general")), "ds_general")
            s["character_threshold"] = text(gr.Slider(0, 1, tag.character_threshold, step=0.01,
                                                      label=t(lang, "ds_character"), elem_id="ds-character"),
                                            "ds_character")
            s["max_tags"] = text(gr.Number(tag.max_tags, precision=0, label=t(lang, "ds_max_tags"),
                                           elem_id="ds-max-tags"), "ds_max_tags")
        with gr.Row():
            s["first"] = text(gr.Textbox(label=t(lang, "ds_first"), elem_id="ds-first"), "ds_first")
            s["exclude"] = text(gr.Textbox(label=t(lang, "ds_exclude"), elem_id="ds-exclude"), "ds_exclude")
        with gr.Row():
            s["rating"] = text(gr.Checkbox(tag.rating, label=t(lang, "ds_rating"), elem_id="ds-rating"), "ds_rating")
            s["keep_underscores"] = text(gr.Checkbox(not tag.underscores_to_spaces, label=t(lang, "ds_underscores"),
                                                     elem_id="ds-underscores"), "ds_underscores")
            s["device"] = text(gr.Dropdown(["auto", "cpu", "cuda"], value="auto", label=t(lang, "ds_device"),
                                           elem_id="ds-device"), "ds_device")
            s["batch_size"] = text(gr.Number(4, precision=0, minimum=1, label=t(lang, "ds_batch"),
                                             elem_id="ds-batch"), "ds_batch")
        with text(gr.Accordion(t(lang, "ds_captioner"), open=False, elem_id="ds-captioner"), "ds_captioner"):
            with gr.Row():
                s["task"] = text(gr.Dropdown(list(FLORENCE_TASKS), value=cap.task, label=t(lang, "ds_task"),
                                             elem_id="ds-task"), "ds_task")
                s["max_length"] = text(gr.Number(cap.max_length, precision=0, minimum=1, elem_id="ds-max-length",
                                                 label=t(lang, "ds_max_length")), "ds_max_length")
                s["num_beams"] = text(gr.Number(cap.num_beams, precision=0, minimum=1, elem_id="ds-beams",
                                                label=t(lang, "ds_beams")), "ds_beams")
            with gr.Row():
                s["prefix"] = text(gr.Textbox(cap.prefix, label=t(lang, "ds_prefix"), elem_id="ds-prefix"),
                                   "ds_prefix")
                s["suffix"] = text(gr.Textbox(cap.suffix, label=t(lang, "ds_suffix"), elem_id="ds-suffix"),
                                   "ds_suffix")
        with gr.Row():
            start = text(gr.Button(t(lang, "ds_start"), variant="primary", elem_id="ds-start"), "ds_start", "value")
            stop = text(gr.Button(t(lang, "ds_stop"), variant="stop", elem_id="ds-stop"), "ds_stop", "value")
        progress = gr.HTML(elem_id="ds-progress")
        status = gr.Markdown(elem_id="ds-tag-status")
    return s, start, stop, progress, status


def _bulk(page: Page) -> tuple[dict[str, Any], Any, Any, Any, Any, Any]:
    """The bulk edit's fields (EDIT_KEYS), Preview, Apply, Undo, the status and the change table."""
    lang, text = page.form.lang, page.text
    with text(gr.Accordion(t(lang, "ds_bulk"), open=True, elem_id="ds-bulk"), "ds_bulk"):
        with gr.Row():
            e = {"prefix": text(gr.Textbox(label=t(lang, "ds_edit_prefix"), elem_id="ds-edit-prefix"),
                                "ds_edit_prefix"),
                 "replace": text(gr.Textbox(label=t(lang, "ds_edit_replace"), lines=2, elem_id="ds-edit-replace"),
                                 "ds_edit_replace"),
                 "regex": text(gr.Checkbox(False, label=t(lang, "ds_edit_regex"), elem_id="ds-edit-regex"),
                               "ds_edit_regex")}
        with gr.Row():
            e["remove"] = text(gr.Textbox(label=t(lang, "ds_edit_remove"), elem_id="ds-edit-remove"),
                               "ds_edit_remove")
            e["min_count"] = text(gr.Number(0, precision=0, minimum=0, label=t(lang, "ds_edit_min_count"),
                                            elem_id="ds-edit-min-count"), "ds_edit_min_count")
            e["dedupe"] = text(gr.Checkbox(False, label=t(lang, "ds_edit_dedupe"), elem_id="ds-edit-dedupe"),
                               "ds_edit_dedupe")
            e["sort"] = text(gr.Checkbox(False, label=t(lang, "ds_edit_sort"), elem_id="ds-edit-sort"),
                             "ds_edit_sort")
        with gr.Row():
            preview = text(gr.Button(t(lang, "ds_preview"), elem_id="ds-preview"), "ds_preview", "value")
            apply = text(gr.Button(t(lang, "ds_apply"), variant="primary", elem_id="ds-apply"), "ds_apply", "value")
            undo = text(gr.Button(t(lang, "ds_undo"), elem_id="ds-undo"), "ds_undo", "value")
        status = gr.Markdown(elem_id="ds-edit-status")
        changes = text(gr.Dataframe(headers=[t(lang, f"ds_col_{key}") for key in ("file", "before", "after")],
                                    label=t(lang, "ds_changes"), interactive=False, wrap=True, max_height=420,
                                    elem_id="ds-changes"), "ds_changes")
    return e, preview, apply, undo, status, changes


# --- reading the dataset -------------------------------------------------------------------------------------

def _dataset(values: tuple) -> tuple[Path, str, Any]:
    """(root, caption extension, the form's config) of the form's values; a UserError without a folder."""
    data = form_data(values)
    config = views.form_config(data)
    return views.dataset_root(data.get("train_data_dir")), config.caption_extension, config


def refresh_views(lang: str, folder: str, chosen: list[str], *values: Any) -> list[Any]:
    """[folders, folder filter, chosen images, gallery, shown paths, frequency table, image checks]."""
    try:
        root, extension, config = _dataset(values)
        files = edits.caption_files(root, extension)
    except UserError as exc:
        return [views.problems_text(exc, lang), gr.update(choices=[(t(lang, "ds_all_folders", n=0), views.ALL)],
                                                          value=views.ALL),
                gr.update(choices=[], value=[]), [], [], views.frequency_frame([], lang), ""]
    choices = views.folder_choices(root, files, lang)
    folder = folder if folder in {value for _, value in choices} else views.ALL
    in_folder = views.folder_files(files, folder)
    shown = in_folder[:views.GALLERY_MAX]
    images = [(views.relative(item.image, root), str(item.image)) for item in files]
    kept = [path for path in chosen or [] if path in {value for _, value in images}]
    findings = check_images(root, Limits.from_config(config), extension)
    note = t(lang, "ds_gallery_capped", n=len(shown)) if len(in_folder) > len(shown) else ""
    return [views.folders_markdown(root, files, lang) + note, gr.update(choices=choices, value=folder),
            gr.update(choices=images, value=kept), views.gallery_items(shown, lang),
            [str(item.image) for item in shown], views.frequency_frame(files, lang),
            views.findings_markdown(root, findings, lang)]


def relabel_views(lang: str, shown: list[str], folder: str, chosen: list[str], reviewed: Any) -> list[Any]:
    """The views in the new language, once the tab has shown a folder (else nothing is read), of the form as the
    page last reviewed it (ui/page.py Page.reviewed)."""
    return refresh_views(lang, folder, chosen, *form_values(reviewed.data)) if shown and reviewed else [gr.skip()] * 7


def pick(evt: gr.SelectData, lang: str, shown: list[str], *values: Any) -> list[Any]:
    """The clicked picture's caption into the editor: [editing, its name, caption]."""
    if not isinstance(evt.index, int) or evt.index >= len(shown):  # a gallery older than the folder
        return [gr.skip()] * 3
    image = Path(shown[evt.index])
    try:
        _, extension, _ = _dataset(values)
    except UserError as exc:
        return ["", views.problems_text(exc, lang), ""]
    item = edits.read_caption(image, extension)
    name = f"**{item.path.parent.name}/{item.path.name}**"
    return [str(image), name + (f"\n\n⚠ {item.error}" if item.error else ""), item.caption]


def save_caption(lang: str, editing: str, caption: str, *values: Any) -> list[Any]:
    """Write the editor's caption (UTF-8, the caption extension), the old one kept for Undo: [status, version]."""
    if not editing:
        return [t(lang, "ds_pick_image"), gr.skip()]
    try:
        root, extension, _ = _dataset(values)
        [image] = edits.chosen_images(root, [Path(editing)])
    except UserError as exc:
        return [views.problems_text(exc, lang), gr.skip()]
    path = edits.read_caption(image, extension).path
    edits.write_caption(path, caption.strip(), edits.Backup(root, f"edit {views.relative(path, root)}"))
    return [t(lang, "ds_saved", file=views.relative(path, root)), time.time()]


def choose_image(editing: str, chosen: list[str]) -> list[str]:
    return list(dict.fromkeys([*(chosen or []), editing])) if editing else chosen


# --- tagging -------------------------------------------------------------------------------------------------

def start_tagging(lang: str, job: str, chosen: list[str], *values: Any) -> list[Any]:
    """Start the `caption` child on all or the chosen images: [status, progress, job, seen, timer]."""
    settings = dict(zip(SETTING_KEYS, values[:len(SETTING_KEYS)]))
    if job and jobs.alive(Path(job)):
        return [t(lang, "ds_tag_busy"), gr.skip(), gr.skip(), gr.skip(), gr.skip()]
    try:
        root, extension, _ = _dataset(values[len(SETTING_KEYS):])
        only = edits.chosen_images(root, chosen) if chosen else []
    except UserError as exc:
        return [views.problems_text(exc, lang), "", gr.skip(), gr.skip(), gr.skip()]
    folder = jobs.start_job(jobs.caption_args(root, extension, only, settings))
    return [t(lang, "ds_tag_starting"), "", str(folder), None, gr.Timer(active=True)]


def find_tagging(job: str) -> list[Any]:
    """[job, seen, timer]: a page (re)loaded while a tagging runs watches it again."""
    found = None if job else jobs.running_job()
    return [str(found), None, gr.Timer(active=True)] if found else [gr.skip()] * 3


def stop_tagging(lang: str, job: str) -> str:
    if not job or not jobs.stop_job(Path(job)):
        return t(lang, "ds_tag_none")
    return t(lang, "ds_tag_stopping")


def poll(lang: str, job: str, seen: Any) -> list[Any]:
    """[progress, status, seen, version, timer]: redrawn when the log grew; at the end the dataset is read again
    (version) and the timer stops."""
    if not job:
        return [gr.skip(), gr.skip(), seen, gr.skip(), gr.Timer(active=False)]
    folder = Path(job)
    log = folder / jobs.CONSOLE_LOG
    running = jobs.alive(folder)
    now = (lang, log.stat().st_size if log.exists() else 0, running)
    if now == seen:
        return [gr.skip(), gr.skip(), seen, gr.skip(), gr.skip()]
    found = jobs.read_job(folder)
    ended = [time.time(), gr.Timer(active=False)] if found.over else [gr.skip(), gr.skip()]
    return [jobs.progress_html(found, lang), jobs.status_markdown(found, lang), now, *ended]


def add_removed_tag(evt: gr.SelectData, removed: str) -> str:
    """A tag clicked in the frequency table joins the tags to remove."""
    if not isinstance(evt.index, list) or evt.index[1] != 0 or not isinstance(evt.value, str):
        return gr.skip()
    tags = edits.split_tags(removed or "")
    return edits.join_tags(tags if evt.value in tags else [*tags, evt.value])


# --- bulk edits ----------------------------------------------------------------------------------------------

def _plan(chosen: list[str], values: tuple) -> tuple[Path, list[edits.Change], str]:
    """(root, the changes, the operation's label) of the bulk edit fields over all or the chosen images."""
    fields = dict(zip(EDIT_KEYS, values[:len(EDIT_KEYS)]))
    root, extension, _ = _dataset(values[len(EDIT_KEYS):])
    only = edits.chosen_images(root, chosen) if chosen else None
    pairs = [line for line in (fields["replace"] or "").splitlines() if line.strip()]
    edit = edits.parse_edit(fields["prefix"] or "", pairs, [fields["remove"] or ""], regex=bool(fields["regex"]),
                            min_count=int(fields["min_count"] or 0), dedupe=bool(fields["dedupe"]),
                            sort=bool(fields["sort"]))
    if not edit:
        raise UserError(t("en", "ds_edit_nothing"), zh=t("zh", "ds_edit_nothing"))
    return root, edits.plan_edit(edits.caption_files(root, extension, only), edit), _label(fields, pairs)


def _label(fields: dict[str, Any], pairs: list[str]) -> str:
    """The operation as the `tags` command writes it (what Undo and `tags --undo` name)."""
    parts = [f"--prefix {fields['prefix']}" if fields["prefix"] else ""] + [f"--replace {pair}" for pair in pairs]
    parts += [f"--remove {fields['remove']}" if fields["remove"] else "", "--regex" * bool(fields["regex"])]
    parts += [f"--min-count {int(fields['min_count'])}" if fields["min_count"] else ""]
    parts += ["--dedupe" * bool(fields["dedupe"]), "--sort" * bool(fields["sort"])]
    return "tags " + " ".join(part for part in parts if part)


def preview_edit(lang: str, chosen: list[str], *values: Any) -> list[Any]:
    """[status, change table]: what Apply would write; nothing is written."""
    try:
        root, changes, _ = _plan(chosen, values)
    except UserError as exc:
        return [views.problems_text(exc, lang), views.changes_frame(Path(), [], lang)]
    return [t(lang, "ds_preview_count", n=len(changes)), views.changes_frame(root, changes, lang)]


def apply_edit(lang: str, chosen: list[str], *values: Any) -> list[Any]:
    """[status, change table, version]: the edit planned again from the captions as they are now, then written."""
    try:
        root, changes, label = _plan(chosen, values)
    except UserError as exc:
        return [views.problems_text(exc, lang), views.changes_frame(Path(), [], lang), gr.skip()]
    if not changes:
        return [t(lang, "ds_preview_count", n=0), views.changes_frame(root, [], lang), gr.skip()]
    edits.apply_changes(root, changes, label)
    return [t(lang, "ds_applied", n=len(changes)), views.changes_frame(root, changes, lang), time.time()]


def undo_last(lang: str, *values: Any) -> list[Any]:
    """[status, change table, version]: the last operation's captions put back."""
    try:
        root, _, _ = _dataset(values)
        undone = edits.undo(root)
    except UserError as exc:
        return [views.problems_text(exc, lang), gr.skip(), gr.skip()]
    return [t(lang, "ds_undone", label=undone.label, restored=len(undone.restored), removed=len(undone.removed)),
            views.changes_frame(root, [], lang), time.time()]
