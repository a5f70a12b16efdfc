"""The Run tab's log in the page's language: Danlu's own lines translated, every other line as written.

train.log and console.log stay in English (the text a user pastes into a bug report or a forum post reads the same
for everyone); the page shows Danlu's own lines, which follow fixed patterns (trainer/training/loop.py,
trainer/run/events.py, trainer/run/runner.py), in Chinese on the zh page. Library lines (diffusers, PyTorch
warnings, tracebacks) pass unchanged.
"""

from __future__ import annotations

import re

# "12:01:02 INFO message" (trainer/run/events.py's log format)
_LINE = re.compile(r"^(\d\d:\d\d:\d\d) (INFO|WARNING|ERROR) (.*)$")
LEVELS_ZH = {"INFO": "信息", "WARNING": "警告", "ERROR": "错误"}
STATUS_ZH = {"completed": "完成", "stopped": "已停止", "failed": "失败"}

# Danlu's message patterns -> the Chinese template ({1}, {2}... are the groups; {status} a STATUS_ZH word)
PATTERNS_ZH: list[tuple[re.Pattern[str], str]] = [(re.compile(pattern), template) for pattern, template in (
    (r"^step (\d+)/(\d+) epoch (\d+) loss (\S+) avg (\S+) (\S+) it/s$",
     "第 {1}/{2} 步 · 第 {3} 轮 · loss {4} · 平均 {5} · {6} it/s"),
    (r"^saved (.+)$", "已保存 {1}"),
    (r"^training (completed|stopped|failed) at step (\d+)$", "训练{status}，停在第 {2} 步"),
    (r"^training failed at step (\d+) \((\w+)\)$", "训练在第 {1} 步失败（{2}）"),
    (r"^latents cached: (.+) encoded in ([\d.]+)s$", "latent 缓存完成：{1}，编码用时 {2} 秒"),
    (r"^resumed from (.+) at step (\d+), epoch (\d+)$", "已从 {1} 继续训练：第 {2} 步，第 {3} 轮"),
    (r"^network_weights: continued from (.+)$", "network_weights：从 {1} 继续训练"),
    (r"^step plan:$", "步数计划："),
    (r"^health (\w+): (.*) \(hint: (.*)\)$", "炸炉检测 {1}：{2}（建议：{3}）"),
    (r"^SIGTERM: stopping after this step, saving first.*$", "收到停止请求：这一步结束后先保存，再停止"),
    (r"^(.+): the run ends at once, without saving$", "{1}：训练立即结束，这一刻不保存"),
    (r"^\[danlu\] the training did not stop within (\S+)s of the stop request; it was killed$",
     "[danlu] 发出停止请求后 {1} 秒内训练没有停下，已被强制结束"),
)]


def log_text(lines: list[str], lang: str) -> str:
    """The log lines as the Run tab shows them in lang."""
    return "\n".join(lines if lang != "zh" else map(line_zh, lines))


def line_zh(line: str) -> str:
    """One log line with Danlu's own message and its level in Chinese; another line as it is."""
    head = _LINE.match(line)
    time, level, message = head.groups() if head else ("", "", line)
    for pattern, template in PATTERNS_ZH:
        found = pattern.match(message)
        if found:
            template = template.replace("{status}", STATUS_ZH.get(found.group(1), ""))
            message = _GROUP.sub(lambda field: found.group(int(field.group(1))), template)
            break
    return f"{time} {LEVELS_ZH[level]} {message}" if head else message


_GROUP = re.compile(r"\{(\d)\}")  # a template's {1}: the pattern's first group (paths may hold braces: no format())
