"""pydantic's own validation errors in Chinese: one template per error type, filled from the error's context.

pydantic words its errors in English only ("Input should be a valid integer"); trainer/config/io.py turns each
into a Problem and takes its zh from here. A schema validator's own refusal (a RuleError, see
trainer/common/errors.py) carries its Chinese itself.
"""

from __future__ import annotations

from typing import Any

from trainer.common.errors import RuleError

# error type -> Chinese template; {name} is filled from the error's ctx (ge, expected, min_length, ...)
ZH_TEMPLATES: dict[str, str] = {
    "missing": "必须填写",
    "extra_forbidden": "未知参数",
    "int_parsing": "应为整数",
    "int_type": "应为整数",
    "int_from_float": "应为整数，不能带小数",
    "float_parsing": "应为数字",
    "float_type": "应为数字",
    "finite_number": "应为有限的数字",
    "bool_parsing": "应为 true 或 false（开或关）",
    "bool_type": "应为 true 或 false（开或关）",
    "string_type": "应为文本",
    "list_type": "应为列表",
    "tuple_type": "应为列表",
    "dict_type": "应为“参数: 值”的映射",
    "none_required": "应留空",
    "greater_than": "应大于 {gt}",
    "greater_than_equal": "应不小于 {ge}",
    "less_than": "应小于 {lt}",
    "less_than_equal": "应不大于 {le}",
    "multiple_of": "应为 {multiple_of} 的倍数",
    "literal_error": "不是允许的取值之一：{expected}",
    "enum": "不是允许的取值之一：{expected}",
    "string_too_short": "至少 {min_length} 个字符",
    "string_too_long": "最多 {max_length} 个字符",
    "too_short": "至少要有 {min_length} 项",
    "too_long": "最多 {max_length} 项",
    "union_tag_invalid": "不是允许的取值之一：{expected_tags}",
}
FALLBACK = "取值无效（{msg}）"  # a type not in the table: Chinese framing around pydantic's English


def zh_message(error: dict[str, Any]) -> str:
    """The Chinese of one pydantic error (an item of ValidationError.errors()): a validator's own zh when it
    raised a RuleError, else the template of its type."""
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, RuleError) and cause.zh:
        return cause.zh
    template = ZH_TEMPLATES.get(error["type"], FALLBACK)
    try:
        return template.format(msg=error.get("msg", ""), **{k: v for k, v in ctx.items() if k != "error"})
    except (KeyError, IndexError):  # a context without the value the template names
        return FALLBACK.format(msg=error.get("msg", ""))
