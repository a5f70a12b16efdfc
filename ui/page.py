"""What the page's sections share: the language switch, the form, the message line and the run monitor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from .fields import config_from_form
from .form import Form
from .i18n import t
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

    def text(self, component: Any, key: str, attribute: str = "label") -> Any:
        """Register a component whose `attribute` is the text `key`: relabelled when the language changes."""
        self.localized.append((component, attribute, key))
        return component

    def relabel(self, lang: str) -> list[Any]:
        return [gr.update(**{attribute: t(lang, key)}) for _, attribute, key in self.localized]

    @property
    def localized_components(self) -> list[Any]:
        return [component for component, _, _ in self.localized]


def form_data(values: tuple | list) -> dict[str, Any]:
    """The config the widgets hold (handlers receive the widget values in FIELD_SPECS order)."""
    return config_from_form(list(values))
