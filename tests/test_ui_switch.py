"""The language switch (ui/app.py _wire_language), without a browser: one event that gathers none of the form's
widgets (the browser's cost grows with each input and each event) and words the run bar, the fields and the review
the page shows in the new language."""

from __future__ import annotations

import re

import gradio as gr

from ui.app import build_app
from ui.review import review

CJK = re.compile(r"[\u4e00-\u9fff]")


def test_one_switch_event_words_the_bar_and_the_fields_from_the_review_shown(tmp_path):
    blocks = build_app("en", {})
    lang = next(block for block in blocks.blocks.values() if getattr(block, "elem_id", None) == "lang")
    switches = [fn for fn in blocks.fns.values() if (lang._id, "change") in fn.targets]
    assert len(switches) == 1  # the tabs follow through Page.on_language, not events of their own
    switch = switches[0]
    by_id = {getattr(c, "elem_id", None): c for c in switch.outputs}
    form_widgets = {id(c) for c in switch.outputs if "danlu-field" in (getattr(c, "elem_classes", None) or [])}
    sent = form_widgets & {id(c) for c in switch.inputs}
    assert len(form_widgets) > 100 and sent == {id(by_id["output_dir"])}  # for the bar; the review is server side
    shown = review({"train_data_dir": str(tmp_path / "gone"), "output_dir": str(tmp_path)})
    values = ["zh", shown, str(tmp_path)] + [c.value if isinstance(c, gr.State) else None for c in switch.inputs[3:]]
    updates = dict(zip(map(id, switch.outputs), switch.fn(*values)))
    assert CJK.search(updates[id(by_id["run-line"])])  # the bar's line too, not only at the next poll
    dataset = updates[id(by_id["train_data_dir"])]
    assert dataset["info"].startswith("⚠") and CJK.search(dataset["info"]) and "elem_classes" not in dataset
    assert CJK.search(updates[id(by_id["network_dim"])]["info"])  # help text: Chinese
