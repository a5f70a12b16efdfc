"""The Tools tab: the LoRA tools (info, resize, merge, convert), one section each.

A button builds the arguments of `python -m trainer lora ...` from its fields (the `*_argv` functions: pure,
tested without Gradio) and runs them as a child process (`run_tool`, through trainer/run/child.py): the GUI
process never imports the torch-heavy tool code, a refusal comes back as the tool's problems (not text to
parse), and the command shown above the result is the one to type in a terminal for the same job. Choices come
from trainer/lora_tools/cli.py, the parser's own lists.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from trainer.common.errors import Problem
from trainer.common.exit_codes import EXIT_OK
from trainer.lora_tools.cli import DYNAMIC_METHODS, LAYOUTS, PRECISIONS
from trainer.run import child

from .i18n import t
from .page import Page

NO_METHOD = "none"  # the dynamic method choice that passes no --dynamic-method: every layer gets --rank
MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~])")


class MissingField(ValueError):
    """A field the tool cannot run without is empty (or, text "tools_whole", not a whole number of 1 or more);
    `field` is the text key of its label: the message names it, where Gradio's own range check would toast only
    "Error"."""

    def __init__(self, field: str, text: str = "tools_missing"):
        super().__init__(field)
        self.field, self.text = field, text


@dataclass(frozen=True)
class ToolResult:
    ok: bool
    text: str  # stdout when ok; the tool's error/hint lines when it refused; else the last lines of stderr
    code: int = EXIT_OK
    problems: list[Problem] = field(default_factory=list)  # why it refused: the input was wrong, it said what to do

    @property
    def refused(self) -> bool:
        return bool(self.problems)


# --- the commands (pure) ---------------------------------------------------------------------------------

def info_argv(file: str) -> list[str]:
    return ["lora", "info", _required(file, "tools_info_file")]


def resize_argv(file: str, rank: float | None, conv_rank: float | None, method: str, param: float | None,
                precision: str, output: str, overwrite: bool) -> list[str]:
    """`method` NO_METHOD keeps one rank for all layers (its parameter is then not passed); `precision` "" keeps
    the file's precision."""
    argv = ["lora", "resize", _required(file, "tools_resize_file"), "--rank", _whole(rank, "tools_resize_rank")]
    if conv_rank:  # empty or 0: the tool's default, --rank
        argv += ["--conv-rank", _whole(conv_rank, "tools_resize_conv_rank")]
    if method and method != NO_METHOD:
        if param is None:
            raise MissingField("tools_resize_param")
        argv += ["--dynamic-method", method, "--dynamic-param", str(float(param))]
    if precision:
        argv += ["--save-precision", precision]
    return argv + _output(output, "tools_resize_output_path", overwrite)


def merge_argv(base: str, files: str, ratios: str, precision: str, output: str, overwrite: bool) -> list[str]:
    """`files`: one path a line; `ratios`: numbers split by lines, spaces or commas (the tool checks the count
    and the numbers, and says what is wrong)."""
    base_path = _required(base, "tools_merge_base")
    paths = [path for path in map(_path, files.splitlines()) if path]
    if not paths:
        raise MissingField("tools_merge_files")
    argv = ["lora", "merge", base_path, *paths]
    strengths = [r for r in re.split(r"[\s,，]+", ratios or "") if r]
    if strengths:
        argv += ["--ratio", *strengths]
    if precision:  # else the tool's default
        argv += ["--precision", precision]
    return argv + _output(output, "tools_merge_output_path", overwrite)


def convert_argv(file: str, to: str, output: str, overwrite: bool) -> list[str]:
    if not to:
        raise MissingField("tools_convert_to")
    return ["lora", "convert", _required(file, "tools_convert_file"), "--to", to,
            *_output(output, "tools_convert_output_path", overwrite)]


def _path(text: str | None) -> str:
    """A path as users paste it: spaces and quotes ("Copy as path" on Windows) around it dropped, ~ expanded.
    A relative path starting with '-' gets './' so the parser does not take it for an option."""
    path = (text or "").strip().strip("\"'").strip()
    if not path:
        return ""
    path = os.path.expanduser(path)
    return f".{os.sep}{path}" if path.startswith("-") else path


def _required(text: str | None, field: str) -> str:
    path = _path(text)
    if not path:
        raise MissingField(field)
    return path


def _whole(value: float | None, field: str) -> str:
    if value is None:
        raise MissingField(field)
    if value < 1 or value != int(value):
        raise MissingField(field, "tools_whole")
    return str(int(value))


def _output(text: str | None, field: str, overwrite: bool) -> list[str]:
    return ["--output", _required(text, field), *(["--overwrite"] if overwrite else [])]


# --- running a tool --------------------------------------------------------------------------------------

def run_tool(argv: list[str]) -> ToolResult:
    """Run `python -m trainer ARGV` and sort out how it ended (blocks until it does)."""
    done = child.run(argv)
    if done.ok:
        return ToolResult(True, done.stdout.strip())
    if done.refused:
        said = [line for problem in done.problems for line in _said(problem)]
        return ToolResult(False, "\n".join(said), done.code, done.problems)
    return ToolResult(False, "\n".join(_without_traceback(done.tail())), done.code)


def _without_traceback(lines: list[str]) -> list[str]:
    """A crashed tool's last lines without Python's traceback frames: what it said, and the error itself."""
    return [line for line in lines if not line.startswith(("Traceback ", " ", "\t"))]


def _said(problem: Problem) -> list[str]:
    """A problem as the tool prints it in a terminal: its error line, then its hint line."""
    return [f"error: {_error_line(problem)}", *([f"hint: {problem.hint}"] if problem.hint else [])]


def _error_line(problem: Problem, lang: str = "en") -> str:
    """The problem's line in lang without its hint, which gets a line of its own."""
    return dataclasses.replace(problem, hint="", hint_zh="").line_in(lang)


def result_message(result: ToolResult, lang: str) -> str:
    """The line above the result, in the page's language, the tool's refusal too (the transcript below keeps
    what the tool printed in a terminal)."""
    if result.ok:
        return t(lang, "tools_done")
    if not result.refused:
        return t(lang, "tools_failed", code=result.code)
    parts = []
    for problem in result.problems:
        parts.append(f"**{t(lang, 'tools_refused')}** {_escape(_error_line(problem, lang))}")
        if hint := problem.hint_in(lang):
            parts.append(f"**{t(lang, 'tools_hint')}** {_escape(hint)}")
    return "\n\n".join(parts)


def _escape(text: str) -> str:
    """Paths like my_lora_v2 stay as written, not turned into italics or links."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", text)


def transcript(argv: list[str], result: ToolResult) -> str:
    """The command as typed in a terminal, then what the tool said."""
    return f"$ python -m trainer {shlex.join(argv)}\n\n{result.text}".rstrip()


def run_from_form(make_argv: Callable[..., list[str]], lang: str, *values: Any) -> tuple[str, Any]:
    """A button's handler: (message, result text); an empty required field is named and nothing runs."""
    try:
        argv = make_argv(*values)
    except MissingField as missing:
        return t(lang, missing.text, field=t(lang, missing.field)), gr.skip()
    result = run_tool(argv)
    return result_message(result, lang), transcript(argv, result)


# --- the tab ---------------------------------------------------------------------------------------------

class _Section:
    """One tool's widgets. Labels go through page.text (the page relabels them); help lines and localized
    choices are kept in `helps` and updated by the tab's own language listener (page.text handles one
    attribute per component)."""

    def __init__(self, page: Page, tool: str, helps: list[tuple[Any, Callable[[str], Any]]]):
        self.page, self.tool, self.helps, self.lang = page, tool, helps, page.form.lang

    def field(self, widget: type, name: str, key: str | None = None,
              named_choices: Callable[[str], list[tuple[str, str]]] | None = None, **kwargs: Any) -> Any:
        """A widget with elem_id tools-TOOL-NAME, labelled by `key` (default tools_TOOL_NAME), help `key`_help;
        `named_choices(lang)` for choices whose names are words to translate."""
        key = key or f"tools_{self.tool}_{name.replace('-', '_')}"
        localized = (lambda lang: {"choices": named_choices(lang)}) if named_choices else (lambda lang: {})
        component = widget(label=t(self.lang, key), info=t(self.lang, f"{key}_help"),
                           elem_id=f"tools-{self.tool}-{name}", **localized(self.lang), **kwargs)
        self.helps.append((component, lambda lang: gr.update(info=t(lang, f"{key}_help"), **localized(lang))))
        return self.page.text(component, key)

    def path(self, name: str, **kwargs: Any) -> Any:
        return self.field(gr.Textbox, name, **kwargs)

    def overwrite(self) -> Any:
        return self.field(gr.Checkbox, "overwrite", key="tools_overwrite", value=False)

    def finish(self, make_argv: Callable[..., list[str]], inputs: list[Any]) -> None:
        """The run button, the message line and the result block, wired to run the tool."""
        key = f"tools_{self.tool}_run"
        run = self.page.text(gr.Button(t(self.lang, key), variant="primary", elem_id=f"tools-{self.tool}-run"),
                             key, "value")
        message = gr.Markdown(elem_id=f"tools-{self.tool}-message")
        output = self.page.text(gr.Code(label=t(self.lang, "tools_result"), language=None, interactive=False,
                                        lines=8, max_lines=40, elem_id=f"tools-{self.tool}-output"), "tools_result")
        run.click(lambda lang, *values: run_from_form(make_argv, lang, *values), [self.page.lang, *inputs],
                  [message, output])


def build(page: Page) -> None:
    lang = page.form.lang
    page.text(gr.Markdown(t(lang, "tools_intro"), elem_id="tools-intro"), "tools_intro", "value")
    helps: list[tuple[Any, Callable[[str], Any]]] = []
    for tool, build_section in (("info", _info), ("resize", _resize), ("merge", _merge), ("convert", _convert)):
        title = f"tools_{tool}_title"
        with page.text(gr.Accordion(t(lang, title), open=tool == "info", elem_id=f"tools-{tool}"), title):
            page.text(gr.Markdown(t(lang, f"tools_{tool}_about")), f"tools_{tool}_about", "value")
            build_section(_Section(page, tool, helps))
    page.on_language(lambda lang: [update(lang) for _, update in helps], [], [component for component, _ in helps])


def _info(section: _Section) -> None:
    section.finish(info_argv, [section.path("file")])


def _resize(section: _Section) -> None:
    file = section.path("file")
    with gr.Row():
        rank = section.field(gr.Number, "rank", value=32, precision=0)  # no minimum: _whole names the field
        conv_rank = section.field(gr.Number, "conv-rank", value=None, precision=0)
        precision = section.field(gr.Dropdown, "precision", named_choices=_precision_choices, value="")
    with gr.Row():
        method = section.field(gr.Dropdown, "method", choices=[NO_METHOD, *DYNAMIC_METHODS], value=NO_METHOD)
        param = section.field(gr.Number, "param", value=None)
    output, overwrite = section.path("output-path"), section.overwrite()
    section.finish(resize_argv, [file, rank, conv_rank, method, param, precision, output, overwrite])


def _precision_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(lang, "tools_same_precision"), ""), *((p, p) for p in PRECISIONS)]


def _merge(section: _Section) -> None:
    base = section.path("base")
    with gr.Row():
        files = section.field(gr.Textbox, "files", lines=3, max_lines=12, scale=3)
        ratios = section.field(gr.Textbox, "ratios", lines=3, max_lines=12, scale=1)
    precision = section.field(gr.Dropdown, "precision", choices=list(PRECISIONS), value=PRECISIONS[0])
    output, overwrite = section.path("output-path"), section.overwrite()
    section.finish(merge_argv, [base, files, ratios, precision, output, overwrite])


def _convert(section: _Section) -> None:
    file = section.path("file")
    to = section.field(gr.Radio, "to", choices=list(LAYOUTS), value=LAYOUTS[0])
    output, overwrite = section.path("output-path"), section.overwrite()
    section.finish(convert_argv, [file, to, output, overwrite])

