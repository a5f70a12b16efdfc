"""The Chinese page is Chinese: every kind of message the page shows, rendered in zh, holds Chinese; in en, none.

Key names, values and paths stay Latin in both languages, so the check is that a zh message has CJK characters
(not that it has no Latin). The static test walks trainer/'s source: every Problem, UserError and RuleError
passes its Chinese (zh=), so a new message cannot forget it.
"""

from __future__ import annotations

import ast
import re

import pytest
from conftest import REPO

from trainer.checks.preflight import model_source_problems, overwrite_problems, scan_and_plan
from trainer.common.errors import ConfigError, Problem, UserError
from trainer.config import TrainConfig
from trainer.config.io import validate_config
from trainer.config.pydantic_zh import ZH_TEMPLATES, zh_message
from trainer.presets.importers import import_file
from trainer.run.state import Diagnosis, RunState, diagnose_exit
from trainer.training.health import HealthMonitor, corrupt_weights_event
from ui import log_lines, run_view
from ui.builtin_texts import GRADIO_TEXTS_ZH
from ui.dataset_report import dataset_report
from ui.i18n import t
from ui.live import chart_titles, problems_markdown
from ui.review import Review, review

CJK = re.compile(r"[\u4e00-\u9fff]")
WRITTEN_FOR_ZH = re.compile(r"[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef]")  # CJK, or Chinese punctuation around
# a part translated elsewhere (f"{path}：{reason_zh}")
MESSAGE_CLASSES = {"Problem", "UserError", "RuleError"}


def chinese(text: str) -> bool:
    return bool(CJK.search(text))


# --- every construction passes its Chinese ---------------------------------------------------------------

def _constructions() -> list[tuple[str, ast.Call]]:
    found = []
    for path in sorted((REPO / "trainer").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and _name(node.func) in MESSAGE_CLASSES:
                found.append((f"{path.relative_to(REPO)}:{node.lineno}", node))
    return found


def _name(func: ast.expr) -> str | None:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _literal_parts(node: ast.expr) -> list[str]:
    """The literal text of a string expression (constants, f-string parts, both sides of + and of a conditional)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return ["".join(part.value for part in node.values if isinstance(part, ast.Constant))]
    if isinstance(node, ast.BinOp):
        return _literal_parts(node.left) + _literal_parts(node.right)
    if isinstance(node, ast.IfExp):
        return _literal_parts(node.body) + _literal_parts(node.orelse)
    return []


def test_every_message_in_trainer_passes_its_chinese():
    """Problem(...), UserError(...), RuleError(...) with zh=: where zh is written out, it holds Chinese. A
    Problem rebuilt from another's fields (**values, trainer/run/child.py) carries the zh it had."""
    constructions = _constructions()
    assert len(constructions) > 150  # the walk finds them (about 200)
    missing, latin = [], []
    for where, call in constructions:
        if any(keyword.arg is None for keyword in call.keywords):  # Problem(**fields): a copy
            continue
        zh = next((keyword.value for keyword in call.keywords if keyword.arg == "zh"), None)
        if zh is None:
            missing.append(where)
        elif (parts := _literal_parts(zh)) and not any(WRITTEN_FOR_ZH.search(part) for part in parts):
            latin.append(where)
    assert not missing, f"messages without zh=: {missing}"
    assert not latin, f"zh= without Chinese: {latin}"


# --- each kind of message, rendered in zh ------------------------------------------------------------------

@pytest.mark.parametrize("overrides, key", [
    ({"network_dim": "abc"}, "network_dim"),  # pydantic: int_parsing
    ({"network_dim": -4}, "network_dim"),  # pydantic: greater_than_equal
    ({"mixed_precision": "fp32"}, "mixed_precision"),  # pydantic: literal_error
    ({"optimizer_type": "AdamWW"}, "optimizer_type"),  # a field validator's own message
    ({"adaptive_noise_scale": 0.1}, "noise_offset"),  # a rule between keys (RuleError)
    ({"output_name": "a/b"}, "output_name"),
    ({"max_train_epochs": None, "max_train_steps": None}, "max_train_steps"),
])
def test_field_errors_are_chinese_on_the_zh_page(make_config, overrides, key):
    result = review({**make_config(), **overrides})
    assert chinese(result.errors_in("zh")[key]), result.errors_in("zh")
    assert not chinese(result.errors_in("en")[key]), result.errors_in("en")


def test_every_pydantic_error_type_has_a_chinese_template():
    errors = [{"type": kind, "msg": "x", "ctx": {name: 3 for name in re.findall(r"\{(\w+)\}", template)}}
              for kind, template in ZH_TEMPLATES.items()]
    errors.append({"type": "a_type_pydantic_adds_later", "msg": "Input should be odd"})
    assert all(chinese(zh_message(error)) for error in errors)


def test_unknown_keys_and_the_config_file_are_chinese(tmp_path):
    with pytest.raises(ConfigError) as found:
        validate_config({"netwrk_dim": 8, "mem_eff_attn": True})
    assert all(chinese(problem.line_in("zh")) for problem in found.value.problems)
    assert all(not chinese(str(problem)) for problem in found.value.problems)


def test_dataset_problems_are_chinese(make_config, tmp_path):
    (tmp_path / "data" / "no_repeats").mkdir(parents=True)
    (tmp_path / "data" / "stray.png").write_bytes(b"")
    config = TrainConfig(**make_config(train_data_dir=str(tmp_path / "data")))
    scan, _, _ = scan_and_plan(config)
    assert len(scan.problems) >= 3 and all(chinese(problem.reason_in("zh")) for problem in scan.problems)
    report = dataset_report(scan, None, "zh")
    assert "no repeat count" not in report and "没有找到训练图片" in report
    shown = review(make_config(train_data_dir=str(tmp_path / "missing"))).errors_in("zh")["train_data_dir"]
    assert chinese(shown) and str(tmp_path / "missing") in shown


@pytest.mark.parametrize("name, text", [
    ("kohya.json", '{"LoRA_type": "LyCORIS/LoHa", "LyCORIS_preset": "attn-only", "max_grad_norm": 0, "seed": "", '
                   '"wandb_api_key": "x", "model_list": "custom", "multi_gpu": true, "xformers": "maybe", '
                   '"network_dim": 8, "network_alpha": 4, "dora_wd": true, "network_dropout": 0.1}'),
    ("sd.toml", 'network_module = "networks.oft"\nnetwork_args = ["algo=ia3"]\nweighted_captions = true\n'
                'masked_loss = true\nno_such_option = 1\nfull_fp16 = true\n'),
    ("dataset.toml", '[general]\nshuffle_caption = true\n[[datasets]]\nresolution = 512\n[[datasets.subsets]]\n'
                     'image_dir = "/data/cat"\nnum_repeats = 3\nclass_tokens = "cat"\n'),
])
def test_import_reasons_are_chinese(tmp_path, name, text):
    source = tmp_path / name
    source.write_text(text, encoding="utf-8")
    result = import_file(source)
    reasons = [item for item in [*result.unmapped, *result.changed]]
    assert reasons and all(chinese(item.reason_in("zh")) for item in reasons), [r.reason_in("zh") for r in reasons]
    assert not any(chinese(item.reason_in("en")) for item in reasons)


def test_preflight_problems_are_chinese(make_config, tmp_path):
    config = TrainConfig(**make_config(pretrained_model_name_or_path=str(tmp_path / "nowhere")))
    problems = model_source_problems(config)
    assert problems and all(chinese(problem.line_in("zh")) for problem in problems)
    out = tmp_path / "out"
    out.mkdir()
    config = TrainConfig(**make_config(output_dir=str(out)))
    plan = scan_and_plan(config)[2]
    (out / f"{config.output_name}.safetensors").write_bytes(b"")
    taken = overwrite_problems(config, plan)
    assert taken and chinese(taken[0].line_in("zh")) and "overwrite" in taken[0].line_in("zh")
    page = problems_markdown(Review(problems=taken), "zh")
    assert chinese(page.replace(t("zh", "problems_title"), ""))  # the lines, not only the title


def test_a_refusal_of_the_training_process_reaches_the_page_in_chinese():
    error = UserError("resume: the state is at step 9", "raise max_train_epochs", key=None,
                      zh="resume：保存的状态在第 9 步", hint_zh="请调高 max_train_epochs")
    assert chinese(error.message_in("zh")) and chinese(error.hint_in("zh"))
    assert error.message_in("en") == error.message and error.hint_in("en") == error.hint
    both = ConfigError([Problem(("a",), "bad", zh="不对"), Problem(("b",), "worse", "fix it", zh="更糟", hint_zh="改")])
    assert both.message_in("zh") == "a: 不对\nb: 更糟；改" and both.message_in("en") == both.message


def test_health_banners_are_chinese():
    monitor = HealthMonitor(TrainConfig(train_data_dir="x", pretrained_model_name_or_path="m", learning_rate=1e-2,
                                        max_grad_norm=0))
    events = [monitor.non_finite(3, float("nan"), 1.0, 1e-2)]
    for step in range(200):  # falls, then rises: diverges; then zero gradients
        events += monitor.observe(step, 1.0 / (1 + step) if step < 100 else 0.01 * step, 0.0 if step > 150 else 1.0)
    events.append(corrupt_weights_event(monitor.config, 9, "x.safetensors"))
    codes = {event.code for event in events}
    assert {"nan_loss", "loss_divergence", "loss_collapse"} <= codes, codes
    assert all(chinese(event.message_zh) and chinese(event.hint_zh) for event in events)
    state = RunState()
    state.apply([{"type": "health", **event.fields()} for event in events])
    shown = run_view.banners_html(state, "zh")
    assert "the LoRA" not in shown and "Likely causes" not in shown and chinese(shown)
    assert not chinese(re.sub(r"data-code=\"\w+\"", "", run_view.banners_html(state, "en")))


def test_a_died_process_is_diagnosed_in_chinese(tmp_path):
    (tmp_path / "console.log").write_text("torch.OutOfMemoryError: CUDA out of memory\n", encoding="utf-8")
    state = RunState()
    state.process_died(diagnose_exit(tmp_path, 1))
    assert chinese(run_view.banners_html(state, "zh").split("<pre")[0])
    for code in (None, -9, 3):
        found = diagnose_exit(tmp_path / "empty", code)
        assert chinese(found.message_zh) and chinese(found.hint_zh), found
    assert Diagnosis("m", "h", []).message_zh == ""  # a diagnosis made elsewhere keeps working


def test_danlu_log_lines_are_chinese_and_library_lines_stay():
    lines = ["12:01:02 INFO step 3/10 epoch 1 loss 0.1234 avg 0.1200 1.23 it/s",
             "12:01:09 INFO saved /a/b{1}.safetensors",
             "12:01:10 INFO training completed at step 10", "12:01:02 INFO latents cached: 4 images encoded in 1.5s",
             "12:01:02 INFO training failed at step 4 (nan_loss)", "UserWarning: a library says something"]
    shown = log_lines.log_text(lines, "zh").splitlines()
    assert all(chinese(line) for line in shown[:-1]) and shown[-1] == lines[-1]
    assert "/a/b{1}.safetensors" in shown[1]
    assert log_lines.log_text(lines, "en") == "\n".join(lines)


def test_charts_name_their_axes_and_series_in_chinese():
    state = RunState()
    state.apply([{"type": "step", "step": 1, "loss": 0.2, "lr": 1.0, "lr_effective": {"unet": 2e-6}}])
    assert all(chinese(name) for name in run_view.loss_frame(state, "zh").series)
    assert all(chinese(name) for name in run_view.lr_frame(state, "zh").series)
    for y_key, color_key in (("axis_loss", "axis_curve"), ("axis_lr", "axis_group"), ("axis_loss", "axis_run")):
        assert all(chinese(title) for title in chart_titles("zh", y_key, color_key).values())
        assert not any(chinese(title) for title in chart_titles("en", y_key, color_key).values())


def test_gradio_upload_texts_have_chinese():
    assert GRADIO_TEXTS_ZH["Drop File Here"] and all(chinese(zh) for zh in GRADIO_TEXTS_ZH.values())


def test_a_queues_run_statuses_are_in_the_page_language():
    from ui.compare_tab import queue_markdown

    runs = {"runs": [{"label": "network_dim=4", "status": "completed", "run_dir": "/x"},
                     {"label": "network_dim=8", "status": "pending", "run_dir": None}]}
    zh, en = queue_markdown("zh", runs), queue_markdown("en", runs)
    assert "已完成" in zh and "排队中" in zh and "completed" not in zh
    assert "Completed" in en and "Waiting" in en
