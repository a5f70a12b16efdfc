"""What the page's sections share: the language switch, the form, the message line and the run monitor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from .fields import config_from_form
from .form import Form
from .i18n import LANGS, t
from .monitor import RunMonitor


@dataclass
class Page:
    lang: gr.Radio
    form: Form
    message: gr.Markdown
    monitor: RunMonitor
    shown_errors: gr.State  # {key: problem} the fields show now
    localized: list[tuple[Any, str, str]] = field(default_factory=list)  # (component, attribute, text key)
    # Chains the live review of the form after an event that changed the form (set by ui/app.py).
    then_review: Callable[[Any], Any] = lambda event: event
    # Wirings that need every tab's fields (the form's inputs): run by ui/app.py once all tabs are built.
    later: list[Callable[[], None]] = field(default_factory=list)
    # What follows the language besides the registered texts (on_language): (fn, inputs, outputs) each.
    language_followers: list[tuple[Callable[..., list[Any]], list[Any], list[Any]]] = field(default_factory=list)
    # Server-side, so a language switch needs none of the form's 150 widgets sent (ui/app.py _wire_language):
    reviewed: gr.State = field(init=False)  # the Review the page shows (ui/live.py render_review)
    shown_lang: gr.State = field(init=False)  # the language the page shows: the poll's, never a stale click's

    def __post_init__(self) -> None:
        self.reviewed, self.shown_lang = gr.State(None), gr.State(self.form.lang)

    def on_language(self, fn: Callable[..., list[Any]], inputs: list[Any], outputs: list[Any]) -> None:
        """Have fn(lang, *inputs) -> updates of outputs run in the language switch's one event (ui/app.py): each
        event costs the browser a pass over every widget that ever had a loading status (docs/benchmarks.md)."""
        self.language_followers.append((fn, list(inputs), list(outputs)))

    def text(self, component: Any, key: str, attribute: str = "label", **more: str) -> Any:
        """Register a component whose `attribute` is the text `key` (and each attribute of `more` its key, e.g. a
        chart's x_title="axis_step"): relabelled when the language changes."""
        for name, text_key in {attribute: key, **more}.items():
            self.localized.append((component, name, text_key))
        return component

    def tab(self, key: str, tab_id: str) -> gr.Tab:
        """A tab titled with the text `key`, elem_id tab-<id> (relabelled when the language changes)."""
        return self.text(gr.Tab(t(self.form.lang, key), id=tab_id, elem_id=f"tab-{tab_id}"), key)

    def relabel(self, lang: str) -> list[Any]:
        """One update per component (localized_components' order) with its texts in lang: only those that differ
        between the languages (the browser's cost of a language switch grows with each attribute it sets)."""
        texts: dict[int, dict[str, str]] = {}  # in registration order, as localized_components
        for component, attribute, key in self._translated():
            texts.setdefault(id(component), {})[attribute] = t(lang, key)
        return [gr.update(**attributes) for attributes in texts.values()]

    @property
    def localized_components(self) -> list[Any]:
        """Each registered component with a text that differs between the languages once, in registration order."""
        return list({id(component): component for component, _, _ in self._translated()}.values())

    def _translated(self) -> list[tuple[Any, str, str]]:
        return [entry for entry in self.localized if len({t(lang, entry[2]) for lang in LANGS}) > 1]


def form_data(values: tuple | list) -> dict[str, Any]:
    """The config the widgets hold (handlers receive the widget values in FIELD_SPECS order)."""
    return config_from_form(list(values))
