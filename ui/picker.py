"""A file and folder picker for every path field (the schema says which fields are paths, and whether a file, a
folder or either: trainer/config/schema/base.py `path`). The folder button under such a field opens a panel at the
right listing this computer's folders from the field's value (ui/browse.py); a click on a folder opens it, on a
file picks it, "Use this folder" picks the folder shown. The GUI runs on the user's computer: nothing is uploaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from . import browse
from .fields import FIELD_SPECS
from .i18n import t
from .page import Page

FOLDER, FILE = "d:", "f:"  # entry values: the kind, then the name


def path_fields() -> list[str]:
    return [name for name, spec in FIELD_SPECS.items() if spec.path]


def build(page: Page) -> Callable[[], None]:
    """The panel (hidden until a folder button is pressed); returns its wiring, to run once every tab's fields
    exist."""
    lang = page.form.lang
    with gr.Sidebar(open=True, visible=False, position="right", width=460, elem_id="picker") as panel:
        title = gr.Markdown(elem_id="picker-title")
        folder = page.text(gr.Textbox(label=t(lang, "picker_folder"), elem_id="picker-folder"), "picker_folder")
        with gr.Row():
            up = gr.Button("⬆", elem_id="picker-up", size="sm", scale=0, min_width=40)
            use = page.text(gr.Button(t(lang, "picker_use"), variant="primary", size="sm", elem_id="picker-use"),
                            "picker_use", "value")
            cancel = page.text(gr.Button(t(lang, "picker_cancel"), size="sm", elem_id="picker-cancel"),
                               "picker_cancel", "value")
        entries = gr.Radio(choices=[], label="", show_label=False, elem_id="picker-entries",
                           elem_classes=["danlu-picker-entries"])
    target = gr.State(None)  # the field being picked

    def wire() -> None:
        names = path_fields()
        fields = [page.form.components[name] for name in names]
        shown = [panel, title, folder, entries, use]
        for name in names:
            page.form.browse[name].click(lambda lang, value, name=name: [*_open(lang, name, value), name],
                                         [page.lang, page.form.components[name]], shown + [target],
                                         show_progress="hidden")
        # a picked file or folder changes a field: the live review follows, as after typing
        page.then_review(entries.input(lambda lang, name, where, entry: _enter(lang, name, where, entry, names), [
            page.lang, target, folder, entries], shown + fields, show_progress="hidden"))
        up.click(lambda lang, name, where: _show(lang, name, browse.parent(where)), [page.lang, target, folder],
                 shown, show_progress="hidden")
        folder.submit(lambda lang, name, where: _show(lang, name, where.strip().strip('"')),
                      [page.lang, target, folder], shown, show_progress="hidden")
        page.then_review(use.click(lambda name, where: _pick(name, where, names), [target, folder],
                                   [panel, *fields], show_progress="hidden"))
        cancel.click(lambda: gr.update(visible=False), None, panel, show_progress="hidden")

    return wire


def _open(lang: str, name: str, value: Any) -> list[Any]:
    return _show(lang, name, browse.start_folder(str(value or "")), opened=True)


def _show(lang: str, name: str | None, where: str, opened: bool = False) -> list[Any]:
    """The panel's title, folder, entries and 'use this folder' button for field `name` at folder `where`."""
    kind = FIELD_SPECS[name].path if name else "any"
    listing = browse.list_folder(where, files=kind != "folder")
    # names only: the folder and file icons come from ui/style.css (by the value's kind), not an emoji font
    choices = [(n, FOLDER + n) for n in listing.folders] + [(n, FILE + n) for n in listing.files]
    title = t(lang, f"picker_title_{kind}", field=name or "")
    if listing.cut:
        title += "\n\n" + t(lang, "picker_cut", n=browse.MAX_ENTRIES)
    panel = gr.update(visible=True, open=True) if opened else gr.skip()
    return [panel, title, listing.folder, gr.update(choices=choices, value=None),
            gr.update(visible=kind != "file" and listing.folder != browse.DRIVES)]


def _enter(lang: str, name: str | None, where: str, entry: str | None, names: list[str]) -> list[Any]:
    """A click on a folder opens it; on a file, picks it (the panel closes)."""
    skip_fields = [gr.skip()] * len(names)
    if not entry or not name:
        return [gr.skip()] * 5 + skip_fields
    kind, entry_name = entry[:2], entry[2:]
    path = entry_name if where == browse.DRIVES else str(Path(where) / entry_name)
    if kind == FOLDER:
        return _show(lang, name, path) + skip_fields
    return [gr.update(visible=False), gr.skip(), gr.skip(), gr.skip(), gr.skip()] + _write(name, path, names)


def _pick(name: str | None, where: str, names: list[str]) -> list[Any]:
    if not name or where == browse.DRIVES:
        return [gr.skip()] + [gr.skip()] * len(names)
    return [gr.update(visible=False)] + _write(name, where, names)


def _write(name: str, path: str, names: list[str]) -> list[Any]:
    return [path if other == name else gr.skip() for other in names]
