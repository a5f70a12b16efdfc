"""The Dataset tab's tagger run: `python -m trainer caption DIR --json` (trainer/tagging/cli.py) as a detached child
(trainer/run/child.py), so the GUI process never loads onnxruntime or transformers.

Each run gets a job folder, DANLU_HOME/captioning/<time>/, holding the child's console.log (its JSON lines on stdout,
the Hub's download bars and any refusal on stderr) and process.json. `read_job` turns that log into what the tab
shows; a refusal comes back as the child's Problems (DANLU_JSON_ERRORS), so the page says it in its own language.
Stop writes the --stop-file the child checks between batches (the only way on Windows) and, on POSIX, sends
SIGTERM, which also ends a child still loading or downloading its model (a download resumes next time).
"""

from __future__ import annotations

import html
import json
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from trainer.common.errors import Problem
from trainer.common.paths import danlu_home
from trainer.run import child
from trainer.run.events import new_run_dir
from trainer.run.state import CONSOLE_LOG
from trainer.tagging.options import CaptionOptions, TagOptions

from .i18n import t

JOBS_DIR = "captioning"  # in DANLU_HOME
STOP_FILE = "STOP"
MODE_SWITCHES = {"skip": "--skip-existing", "append": "--append", "overwrite": "--overwrite"}  # run.MODES in the CLI
TAG_DEFAULTS, CAPTION_DEFAULTS = TagOptions(), CaptionOptions()
_started: dict[str, Any] = {}  # job folder -> the Popen this GUI started (its exit code)


def caption_args(root: Path, extension: str, only: list[Path], settings: dict[str, Any]) -> list[str]:
    """The `caption` command line of the tab's settings (keys: model, kind, mode, device, batch_size, the WD14
    options general_threshold, character_threshold, first, exclude, rating, keep_underscores, max_tags, and the
    captioner options task, max_length, num_beams, prefix, suffix)."""
    args = [str(root), "--json", "--caption-extension", extension, MODE_SWITCHES[settings["mode"]]]
    args += ["--model", settings["model"].strip()] if (settings["model"] or "").strip() else []
    args += ["--kind", settings["kind"]] if settings["kind"] and settings["kind"] != "auto" else []
    args += ["--device", settings["device"] or "auto", "--batch-size", str(int(settings["batch_size"] or 1))]
    for key in ("general_threshold", "character_threshold"):
        args += [f"--{key.replace('_', '-')}", f"{float(settings[key]):g}"]
    for key in ("first", "exclude", "prefix", "suffix"):
        if (settings[key] or "").strip():  # "--first=-x": a value starting with "-" is not taken for an option
            args.append(f"--{key}={settings[key].strip()}")
    args += ["--rating"] if settings["rating"] else []
    args += ["--keep-underscores"] if settings["keep_underscores"] else []
    args += ["--max-tags", str(int(settings["max_tags"] or 0)), "--task", settings["task"]]
    args += ["--max-length", str(int(settings["max_length"] or CAPTION_DEFAULTS.max_length)),
             "--num-beams", str(int(settings["num_beams"] or CAPTION_DEFAULTS.num_beams))]  # an emptied field: default
    return args + (["--only", *map(str, only)] if only else [])


def start_job(args: list[str]) -> Path:
    """Start the child; its job folder."""
    folder = new_run_dir(danlu_home(), JOBS_DIR)
    started = child.start_detached(["caption", *args, "--stop-file", folder / STOP_FILE], folder, json_errors=True)
    _started[str(folder)] = started.popen
    return folder


def running_job() -> Path | None:
    """The newest job folder whose child still runs (a reloaded page finds its tagging again)."""
    folders = sorted((danlu_home() / JOBS_DIR).glob("*/" + child.PROCESS_FILE), reverse=True)
    return next((path.parent for path in folders[:5] if alive(path.parent)), None)


def stop_job(folder: Path) -> bool:
    """Ask the child to stop; False when it had ended already."""
    if not alive(folder):
        return False
    (folder / STOP_FILE).touch()
    if os.name == "posix":
        try:
            os.kill(_pid(folder), signal.SIGTERM)
        except (OSError, ValueError, KeyError):  # ended meanwhile
            pass
    return True


def alive(folder: Path) -> bool:
    popen = _started.get(str(folder))
    if popen is not None:
        return popen.poll() is None
    try:  # started by an earlier GUI process
        return psutil.pid_exists(_pid(folder))
    except (OSError, ValueError, KeyError):
        return False


def _pid(folder: Path) -> int:
    return int(json.loads((folder / child.PROCESS_FILE).read_text(encoding="utf-8"))["pid"])


@dataclass
class Job:
    """What the console.log of a job says so far."""

    folder: Path
    events: list[dict[str, Any]] = field(default_factory=list)  # the child's JSON lines, in order
    problems: list[Problem] = field(default_factory=list)  # its refusal
    other: list[str] = field(default_factory=list)  # every other line (download bars: the last part after \r)
    running: bool = False

    @property
    def done(self) -> dict[str, Any] | None:
        return next((e for e in reversed(self.events) if e.get("event") == "done"), None)

    def last(self, kind: str) -> dict[str, Any] | None:
        return next((e for e in reversed(self.events) if e.get("event") == kind), None)

    @property
    def over(self) -> bool:
        return not self.running


def read_job(folder: Path) -> Job:
    job = Job(folder, running=alive(folder))
    log = folder / CONSOLE_LOG
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    for line in text.splitlines():
        line = line.rsplit("\r", 1)[-1].strip()
        if not line:
            continue
        record = _json(line)
        if isinstance(record, dict) and "event" in record:
            job.events.append(record)
        elif isinstance(record, dict) and "errors" in record:
            job.problems = [child.problem_from_json(item) for item in record["errors"]]
        else:
            job.other.append(line)
    return job


def _json(line: str) -> Any:
    if not line.startswith("{"):
        return None
    try:
        return json.loads(line)
    except ValueError:  # the line being written right now
        return None



def progress_html(job: Job, lang: str) -> str:
    """The bar: images done of the images to caption, with the last one's file and caption."""
    start, step = job.last("start"), job.last("progress")
    total = (step or {}).get("total") or (start or {}).get("total") or 0
    done = (step or {}).get("done", 0)
    if job.done is not None:
        done = total
    percent = round(100 * done / total, 1) if total else (100.0 if job.done else 0.0)
    text = t(lang, "ds_tag_progress", done=done, total=total)
    if step is not None:
        said = step.get("error") or step.get("caption", "")
        text += f" · {Path(step['file']).name}: {said}"
    return (f'<div class="danlu-progress" data-done="{done}" data-total="{total}">'
            f'<div class="danlu-progress-bar" style="width:{percent}%"></div>'
            f'<span class="danlu-progress-text">{html.escape(text)}</span></div>')


def status_markdown(job: Job, lang: str) -> str:
    """Where the job is: refused, ended without finishing, loading the model (the download's last line), running,
    or done with its counts."""
    if job.problems:
        lines = "\n".join(f"- {problem.line_in(lang)}" for problem in job.problems)
        return f"**{t(lang, 'ds_tag_refused')}**\n\n{lines}"
    done = job.done
    if done is not None:
        key = "ds_tag_stopped" if done.get("stopped") else "ds_tag_done"
        failed = "".join(f"\n- ⚠ `{item['file']}`: {item['error']}" for item in done.get("failed", []))
        return t(lang, key, written=done["written"], skipped=done["skipped"], failed=len(done["failed"])) + failed
    if job.over:
        tail = "\n".join(job.other[-5:])
        return t(lang, "ds_tag_died", log=job.folder / CONSOLE_LOG) + (f"\n\n```text\n{tail}\n```" if tail else "")
    start = job.last("start")
    if start is None:
        return t(lang, "ds_tag_starting")
    if job.last("loaded") is None:
        line = job.other[-1] if job.other else ""
        return t(lang, "ds_tag_loading", model=start["model"]) + (f"\n\n`{line}`" if line else "")
    return t(lang, "ds_tag_running", model=start["model"], skipped=start["skipped"])
