"""The page's line charts (gr.LinePlot): what to send them so that every series is drawn, in its own colour.

Gradio's LinePlot fixes its colour scale (the series it draws and lists in the legend) when it first draws data,
and a later update only replaces the data: a chart first sent an empty table drew axes without lines until the
page was reloaded, and a series renamed by the language switch vanished. A chart with no value (None) draws
afresh when data comes: so an empty table is sent as None, and a chart whose series change is cleared first.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

# Colours in the order series first appear in a frame (Tableau 10, readable on light and dark themes).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
LOSS_COLORS = ("#f2b48a", "#d9480f")  # raw loss light, its smoothed line strong: the trend stands out
# Learning rates are 1e-6..1e-2: "1e-4" is how users write them, and a short label is never cut off.
LR_FORMAT = ".3~e"


def series(frame: pd.DataFrame, column: str) -> tuple[str, ...]:
    """The series a frame holds, in order of appearance."""
    return tuple(dict.fromkeys(frame[column])) if column in frame else ()


def colored(frame: pd.DataFrame, column: str, palette: tuple[str, ...] = PALETTE, drawn: tuple[str, ...] = (),
            **more: Any) -> Any:
    """An update showing `frame`, each series (distinct value of `column`) in the next colour of `palette`; any
    other chart option in `more` (e.g. caption). None when the frame is empty, or when the chart draws other
    series now (`drawn`): the caller sends the frame again next time, and the chart draws it afresh."""
    names = series(frame, column)
    if not names or (drawn and drawn != names):
        return gr.update(value=None, **more)
    return gr.update(value=frame, color_map={name: palette[i % len(palette)] for i, name in enumerate(names)},
                     **more)
