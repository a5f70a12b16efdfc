"""The config form: one Gradio widget per schema field, grouped as the schema groups them.

Each widget's elem_id is its config key, its label the key itself (the name tutorials and sd-scripts configs use)
and its info the field's help text in the page's language. A field with a problem shows the problem in place of
its help, in red (class `danlu-invalid`).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from trainer.config import TrainConfig, field_info

from .fields import FIELD_SPECS, FieldSpec, to_form
from .i18n import t

INVALID = "danlu-invalid"


def help_text(name: str, lang: str) -> str:
    return field_info(name)["help_zh"] if lang == "zh" else (TrainConfig.model_fields[name].description or "")


class Form:
    """Builds the widgets tab by tab (`build_tab`) in the page's first language and keeps them by key."""

    def __init__(self, lang: str):
        self.lang = lang
        self.components: dict[str, gr.components.Component] = {}
        self.titled: list[tuple[Any, str]] = []  # (accordion, text key): relabelled when the language changes
        self.browse: dict[str, gr.Button] = {}  # the folder button under each path field (ui/picker.py wires them)

    @property
    def inputs(self) -> list[gr.components.Component]:
        """Every widget in FIELD_SPECS order: the order fields.form_values/config_from_form use."""
        return [self.components[name] for name in FIELD_SPECS]

    def build_tab(self, tab: str) -> None:
        groups: dict[str, list[FieldSpec]] = {}
        for spec in FIELD_SPECS.values():
            if spec.tab == tab:
                groups.setdefault(spec.group, []).append(spec)
        for group, specs in groups.items():
            with gr.Accordion(t(self.lang, f"group_{group}"), open=True, elem_id=f"group-{group}") as box:
                self.titled.append((box, f"group_{group}"))
                self._build_fields([s for s in specs if not s.advanced])
                advanced = [s for s in specs if s.advanced]
                if advanced:
                    with gr.Accordion(t(self.lang, "advanced"), open=False,
                                      elem_id=f"group-{group}-advanced") as more:
                        self.titled.append((more, "advanced"))
                        self._build_fields(advanced)

    def _build_fields(self, specs: list[FieldSpec], per_row: int = 3) -> None:
        for start in range(0, len(specs), per_row):
            with gr.Row(equal_height=False):
                for spec in specs[start:start + per_row]:
                    if spec.path:
                        self._path_widget(spec)
                    else:
                        self.components[spec.name] = self._widget(spec)

    def _path_widget(self, spec: FieldSpec) -> None:
        """A path field with its folder button (the picker; its icon: ui/style.css) under it."""
        with gr.Column(min_width=160, elem_classes=["danlu-path"]):
            self.components[spec.name] = self._widget(spec)
            self.browse[spec.name] = gr.Button("…", size="sm", elem_id=f"{spec.name}-browse",
                                               elem_classes=["danlu-browse"])

    def _widget(self, spec: FieldSpec) -> gr.components.Component:
        common = dict(label=spec.name, info=help_text(spec.name, self.lang), elem_id=spec.name,
                      elem_classes=["danlu-field"], value=to_form(spec, spec.default))
        if spec.kind == "checkbox":
            return gr.Checkbox(**common)
        if spec.kind in ("choice", "open_choice", "tristate"):
            return gr.Dropdown(choices=self.choices(spec, self.lang), allow_custom_value=spec.kind == "open_choice",
                               filterable=spec.kind == "open_choice", **common)
        if spec.kind == "number":  # no minimum/maximum: Gradio's range check toasts a bare "Error"; validation
            return gr.Number(precision=0 if spec.integer else None, **common)  # names the field and its range
        lines = 3 if spec.kind in ("lines", "prompts") else 1
        return gr.Textbox(lines=lines, max_lines=20 if lines > 1 else 1, **common)

    def choices(self, spec: FieldSpec, lang: str) -> list[tuple[str, str]]:
        empty = [(t(lang, "tristate_default"), "")] if spec.optional else []
        if spec.kind == "tristate":
            return empty + [("true", "true"), ("false", "false")]
        return empty + [(str(c), str(c)) for c in spec.choices]

    def box_labels(self, lang: str) -> list[Any]:
        """Updates for the titled boxes (group accordions), in `titled` order."""
        return [gr.update(label=t(lang, key)) for _, key in self.titled]

    def field_update(self, name: str, error: str | None, lang: str) -> Any:
        spec = FIELD_SPECS[name]
        info = self._info(name, error, lang)
        classes = ["danlu-field", INVALID] if error else ["danlu-field"]
        extra = {"choices": self.choices(spec, lang)} if spec.kind in ("choice", "tristate") and spec.optional else {}
        return gr.update(info=info, elem_classes=classes, **extra)

    def language_updates(self, errors: dict[str, str], lang: str) -> list[Any]:
        """Every widget's help or problem in lang after a language switch (FIELD_SPECS order), with only what a
        switch changes: no class (the same problems are shown), no help text both languages share."""
        return [self._language_update(name, spec, errors.get(name), lang) for name, spec in FIELD_SPECS.items()]

    def _language_update(self, name: str, spec: FieldSpec, error: str | None, lang: str) -> Any:
        texts = {"info": self._info(name, error, lang)} if error or help_text(name, "en") != help_text(name, "zh") \
            else {}
        if spec.kind in ("choice", "tristate") and spec.optional:  # the empty choice's words
            texts["choices"] = self.choices(spec, lang)
        return gr.update(**texts) if texts else gr.skip()

    @staticmethod
    def _info(name: str, error: str | None, lang: str) -> str:
        return f"⚠ {error}" if error else help_text(name, lang)

    def field_updates(self, errors: dict[str, str], lang: str, shown: dict[str, str] | None = None) -> list[Any]:
        """Every widget's help or problem (FIELD_SPECS order); with `shown`, only those whose problem changed
        since then (the rest are skipped: no flicker while typing)."""
        return [self.field_update(name, errors.get(name), lang)
                if shown is None or errors.get(name) != shown.get(name) else gr.skip() for name in FIELD_SPECS]
