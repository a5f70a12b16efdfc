"""The GUI's Tools tab: the commands its fields build, the child process that runs them, its words and widgets."""

import json
import os
import subprocess
import sys

import gradio as gr
import pytest
import safetensors
from conftest import REPO, write_config

from trainer.__main__ import main
from trainer.common.errors import Problem
from trainer.lora_tools.cli import DYNAMIC_METHODS, LAYOUTS, PRECISIONS
from trainer.run import child
from ui import tools_tab
from ui.form import Form
from ui.i18n import t
from ui.monitor import RunMonitor
from ui.page import Page
from ui.tools_tab import (
    MissingField,
    ToolResult,
    convert_argv,
    info_argv,
    merge_argv,
    resize_argv,
    result_message,
    run_from_form,
    run_tool,
)
from ui.tools_text import TOOLS_TEXT


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_sd1, train_dir):
    """A tiny training run's LoRA (rank 4): 1 step is enough for a real file with real metadata."""
    root = tmp_path_factory.mktemp("ui_tools")
    config = {"pretrained_model_name_or_path": str(tiny_sd1), "train_data_dir": str(train_dir),
              "output_dir": str(root), "output_name": "tiny", "resolution": "64", "bucket_reso_steps": 16,
              "min_bucket_reso": 64, "max_bucket_reso": 128, "train_batch_size": 2, "max_train_epochs": None,
              "max_train_steps": 1, "network_dim": 4, "network_alpha": 2, "learning_rate": 1e-3,
              "mixed_precision": "no", "save_precision": "float", "max_data_loader_n_workers": 0, "seed": 7}
    assert main(["train", str(write_config(root / "c.yaml", config)), "--run-dir", str(root / "run")]) == 0
    return root / "tiny.safetensors"


# --- the commands the fields build ---------------------------------------------------------------------

def test_info_argv_takes_a_pasted_path():
    assert info_argv('  "/loras/my char.safetensors" ') == ["lora", "info", "/loras/my char.safetensors"]
    assert info_argv("~/a.safetensors") == ["lora", "info", os.path.expanduser("~/a.safetensors")]
    assert info_argv("-odd.safetensors") == ["lora", "info", f".{os.sep}-odd.safetensors"]  # not an option


def test_resize_argv_passes_only_what_was_chosen():
    assert resize_argv("a.safetensors", 16, None, "none", 0.9, "", "b.safetensors", False) == [
        "lora", "resize", "a.safetensors", "--rank", "16", "--output", "b.safetensors"]
    assert resize_argv("a.safetensors", 32.0, 8, "sv_fro", 0.9, "fp16", "b.safetensors", True) == [
        "lora", "resize", "a.safetensors", "--rank", "32", "--conv-rank", "8", "--dynamic-method", "sv_fro",
        "--dynamic-param", "0.9", "--save-precision", "fp16", "--output", "b.safetensors", "--overwrite"]


def test_merge_argv_files_one_a_line_and_ratios_as_written():
    files = "a.safetensors\n\n  'b.safetensors'  \n"
    assert merge_argv("base.safetensors", files, "", "float", "m.safetensors", False) == [
        "lora", "merge", "base.safetensors", "a.safetensors", "b.safetensors", "--precision", "float",
        "--output", "m.safetensors"]
    assert merge_argv("/models/sd15", files, "1\n0.6", "bf16", "out_dir", True)[5:9] == ["--ratio", "1", "0.6",
                                                                                          "--precision"]
    assert merge_argv("/models/sd15", files, "1, 0.6", "bf16", "out_dir", True)[5:8] == ["--ratio", "1", "0.6"]
    assert merge_argv("/models/sd15", files, "1，0.6", "bf16", "out_dir", True)[-1] == "--overwrite"


def test_convert_argv():
    assert convert_argv("a.safetensors", "diffusers", "d.safetensors", True) == [
        "lora", "convert", "a.safetensors", "--to", "diffusers", "--output", "d.safetensors", "--overwrite"]


@pytest.mark.parametrize("build, field", [
    (lambda: info_argv("  "), "tools_info_file"),
    (lambda: resize_argv("", 16, None, "none", None, "", "b", False), "tools_resize_file"),
    (lambda: resize_argv("a", None, None, "none", None, "", "b", False), "tools_resize_rank"),
    (lambda: resize_argv("a", 16, None, "sv_ratio", None, "", "b", False), "tools_resize_param"),
    (lambda: resize_argv("a", 16, None, "none", None, "", "", False), "tools_resize_output_path"),
    (lambda: merge_argv("", "a", "", "float", "m", False), "tools_merge_base"),
    (lambda: merge_argv("base", " \n ", "", "float", "m", False), "tools_merge_files"),
    (lambda: merge_argv("base", "a", "", "float", None, False), "tools_merge_output_path"),
    (lambda: convert_argv('""', "kohya", "c", False), "tools_convert_file"),
    (lambda: convert_argv("a", "kohya", " ", False), "tools_convert_output_path"),
])
def test_an_empty_required_field_is_named(build, field):
    with pytest.raises(MissingField) as refused:
        build()
    assert refused.value.field == field


def test_an_empty_field_is_named_in_the_page_language_and_nothing_runs(monkeypatch):
    monkeypatch.setattr(tools_tab, "run_tool", lambda argv: pytest.fail(f"ran {argv}"))
    message, output = run_from_form(resize_argv, "zh", "a.safetensors", None, None, "none", None, "", "b", False)
    assert message == "请先填写“新 rank”。"
    assert output == gr.skip()  # the result block keeps what it showed


# --- running the tools ----------------------------------------------------------------------------------

def test_info_runs_as_a_child_and_reports_the_rank(trained):
    result = run_tool(info_argv(str(trained)))
    assert result.ok and not result.refused, result.text
    assert "rank:          4" in result.text and "alpha:         2" in result.text
    message, output = run_from_form(info_argv, "en", str(trained))
    assert message == "Done."
    assert output.startswith(f"$ python -m trainer lora info {trained}") and "rank:" in output


def test_resize_writes_the_smaller_file(trained, tmp_path):
    out = tmp_path / "small.safetensors"
    result = run_tool(resize_argv(str(trained), 2, None, "none", None, "fp16", str(out), False))
    assert result.ok, result.text
    assert "to 2" in result.text and str(out) in result.text
    with safetensors.safe_open(str(out), "pt") as handle:
        downs = [handle.get_tensor(k) for k in handle.keys()  # noqa: SIM118 (safe_open is no dict)
                 if k.endswith("lora_down.weight")]
    assert downs and all(d.shape[0] == 2 and str(d.dtype) == "torch.float16" for d in downs)
    again = run_tool(resize_argv(str(trained), 2, None, "none", None, "", str(out), False))
    assert again.refused and "already exists" in again.text and "--overwrite" in again.text


def test_a_missing_file_gives_the_tools_error_in_a_translated_frame(tmp_path):
    missing = tmp_path / "nope.safetensors"
    result = run_tool(info_argv(str(missing)))
    assert not result.ok and result.refused and result.code == 2
    (problem,) = result.problems  # as the tool raised it, not read back from its text
    assert problem.message == f"'{missing}' does not exist" and problem.hint
    assert result.text.splitlines() == [f"error: '{missing}' does not exist", f"hint: {problem.hint}"]
    message = result_message(result, "zh")
    assert message.startswith("**工具拒绝执行：** ") and "不存在" in message and "**建议：**" in message  # in Chinese


def test_an_argparse_refusal_keeps_only_its_error_line():
    result = run_tool(["lora", "resize", "a.safetensors", "--rank", "x", "--output", "b.safetensors"])
    assert result.refused and result.text == "error: argument --rank: invalid int value: 'x'"


def test_an_unexpected_failure_shows_the_last_lines_of_stderr(trained):
    too_long = trained.parent / ("x" * 300 + ".safetensors")  # no file system takes the name: a traceback
    result = run_tool(resize_argv(str(trained), 2, None, "none", None, "", str(too_long), False))
    assert not result.ok and not result.refused and result.code == 1
    assert result.text.splitlines()[-1].startswith("OSError")
    assert len(result.text.splitlines()) <= child.TAIL_LINES
    assert result_message(result, "en") == t("en", "tools_failed", code=1)
    assert "退出码 1" in result_message(result, "zh")


def test_markdown_in_a_refusal_is_shown_as_written():
    refused = ToolResult(False, "error: '/x/my_lora_v2*.safetensors' does not exist", 2,
                         [Problem((), "'/x/my_lora_v2*.safetensors' does not exist")])
    assert r"my\_lora\_v2\*" in result_message(refused, "en")


@pytest.mark.parametrize("args", [["lora", "info", "nope.safetensors"], ["lora", "resize", "a", "--rank", "x"]])
def test_the_cli_prints_a_refusal_as_one_json_line_when_asked(args):
    """A tool's refusal and argparse's own: the same JSON, which trainer/run/child.py reads; text without it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for json_errors in (True, False):
        env[child.JSON_ERRORS_ENV] = "1" if json_errors else "0"
        done = subprocess.run([sys.executable, "-m", "trainer", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 2
        if json_errors:
            (line,) = done.stderr.strip().splitlines()
            (item,) = json.loads(line)["errors"]
            assert item["message"] and item["text"].startswith(item["message"][:10])
        else:
            assert "error: " in done.stderr and not done.stderr.startswith("{")


def test_the_gui_process_does_not_import_torch():
    code = "import sys, ui.tools_tab; sys.exit('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


# --- words and widgets ------------------------------------------------------------------------------------

def test_both_languages_have_the_same_tool_texts():
    assert set(TOOLS_TEXT["en"]) == set(TOOLS_TEXT["zh"])
    assert all(key.startswith("tools_") for key in TOOLS_TEXT["en"])
    assert all(TOOLS_TEXT[lang][key].strip() for lang in TOOLS_TEXT for key in TOOLS_TEXT[lang])


def test_the_tab_builds_with_its_ids_choices_and_both_languages():
    with gr.Blocks():
        lang = gr.Radio(["zh", "en"], value="en")
        page = Page(lang, Form("en"), gr.Markdown(), RunMonitor(), gr.State({}))
        tools_tab.build(page)
    by_id = {c.elem_id: c for c, _, _ in page.localized if getattr(c, "elem_id", None)}
    for tool, fields in {"info": ["file"], "resize": ["file", "rank", "conv-rank", "method", "param", "precision",
                                                      "output-path", "overwrite"],
                         "merge": ["base", "files", "ratios", "precision", "output-path", "overwrite"],
                         "convert": ["file", "to", "output-path", "overwrite"]}.items():
        for name in [*fields, "run", "output"]:
            assert f"tools-{tool}-{name}" in by_id, (tool, name)
        for name in fields:  # every input has help text
            assert by_id[f"tools-{tool}-{name}"].info, (tool, name)
    assert [v for _, v in by_id["tools-resize-method"].choices] == ["none", *DYNAMIC_METHODS]
    assert [v for _, v in by_id["tools-resize-precision"].choices] == ["", *PRECISIONS]
    assert [v for _, v in by_id["tools-convert-to"].choices] == list(LAYOUTS)
    zh = {component.elem_id: update for component, update in zip(page.localized_components, page.relabel("zh"))
          if getattr(component, "elem_id", None)}
    assert zh["tools-resize-rank"]["label"] == "新 rank" and zh["tools-merge-run"]["value"] == "开始融合"
    help_switch, _, outputs = next(f for f in page.language_followers if by_id["tools-resize-rank"] in f[2])
    helps = dict(zip([c.elem_id for c in outputs], help_switch("zh")))
    assert helps["tools-resize-rank"]["info"] == TOOLS_TEXT["zh"]["tools_resize_rank_help"]
    assert helps["tools-resize-precision"]["choices"][0] == ("（与原文件相同）", "")


def test_a_rank_below_one_is_named_and_an_empty_conv_rank_passes_nothing(monkeypatch):
    """Gradio's own range check would toast a bare "Error": the argv builder names the field instead."""
    monkeypatch.setattr(tools_tab, "run_tool", lambda argv: pytest.fail(f"ran {argv}"))
    assert "--conv-rank" not in resize_argv("a.safetensors", 16, 0, "none", None, "", "b.safetensors", False)
    message, _ = run_from_form(resize_argv, "en", "a.safetensors", 16, -2, "none", None, "", "b", False)
    assert message == t("en", "tools_whole", field=t("en", "tools_resize_conv_rank"))
    message, _ = run_from_form(resize_argv, "zh", "a.safetensors", 0, None, "none", None, "", "b", False)
    assert message == t("zh", "tools_whole", field=t("zh", "tools_resize_rank"))


def test_a_crashed_tool_shows_its_error_without_the_traceback(trained):
    too_long = trained.parent / ("x" * 300 + ".safetensors")
    result = run_tool(resize_argv(str(trained), 2, None, "none", None, "", str(too_long), False))
    assert "Traceback" not in result.text and 'File "' not in result.text
    assert result.text.splitlines()[-1].startswith("OSError")
