"""Starting a child process of the trainer, `python -m trainer VERB ...`: the one way every caller does it.

One environment recipe (`child_env`), one argument list (`trainer_argv`) and three ways to run it:

    result = run(["lora", "info", "my.safetensors"])  # blocks: ChildResult(code, stdout, stderr, problems)
    answer = run(["lr-find", cfg, "--json"]).check().json  # the JSON it printed; a refusal raises ConfigError
    child = start_detached(["train", cfg, "--run-dir", run_dir], run_dir)  # returns at once; own session,
                                                      # run_dir/console.log and run_dir/process.json
    process = start_piped(["worker"], log)            # a long-lived helper reading requests on stdin

A refusal (exit status 2) comes back as the child's Problems, never as text to parse: `run` sets
DANLU_JSON_ERRORS, under which the CLI prints them as one JSON line on stderr (trainer/__main__.py),
{"errors": [{"keys": [...], "message": ..., "hint": ..., "text": the line as printed, ...}]}. A detached child
keeps the readable form: people read its console.log. The child works in this process's folder, so a relative
path means the same to both. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from trainer.common.errors import ConfigError, Problem, UserError
from trainer.common.exit_codes import EXIT_BAD_INPUT, EXIT_OK
from trainer.common.files import atomic_write_text
from trainer.common.paths import REPO
from trainer.run.state import CONSOLE_LOG

JSON_ERRORS_ENV = "DANLU_JSON_ERRORS"  # "1": the CLI prints its refusals as JSON (error_json)
PROCESS_FILE = "process.json"  # a detached child's {pid, started_at, argv}
TAIL_LINES = 20  # of stderr, in the message of a child that failed without saying why


class ChildFailed(UserError):
    """The child could not start, ran past its time, or failed without a refusal (a crash)."""


def child_env(json_errors: bool = False) -> dict[str, str]:
    """This process's environment (HF_HUB_OFFLINE, HF_HOME, DANLU_HOME, CUDA_VISIBLE_DEVICES pass through) with
    the repository first on PYTHONPATH (`python -m trainer` is found from any working folder), and output
    unbuffered (console.log shows each line as it is printed) and in UTF-8 (captions and paths in any language,
    whatever the system's code page). json_errors: refusals as JSON on stderr, for `run`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop(JSON_ERRORS_ENV, None)
    return {**env, JSON_ERRORS_ENV: "1"} if json_errors else env


def trainer_argv(args: Sequence[str | Path]) -> list[str]:
    """`python -m trainer ARGS` with this Python (the GUI's virtual environment is the trainer's)."""
    return [sys.executable, "-m", "trainer", *map(str, args)]


# --- the refusal as JSON, both ways ----------------------------------------------------------------------

def problem_json(problem: Problem) -> dict[str, Any]:
    """Every field of the Problem (the other side rebuilds it exactly) and its line as `text`."""
    return {**dataclasses.asdict(problem), "text": str(problem)}


def problem_from_json(item: dict[str, Any]) -> Problem:
    """problem_json's inverse (`text` is left out: the Problem makes its own line)."""
    names = {field.name for field in dataclasses.fields(Problem)}
    values = {name: value for name, value in item.items() if name in names}
    return Problem(**{**values, "keys": tuple(values.get("keys", ()))})


def error_record(exc: UserError) -> dict[str, Any]:
    """A refusal as JSON data: {"errors": [problem_json, ...]} (the worker answers with it too)."""
    return {"errors": [problem_json(problem) for problem in exc.problems]}


def error_json(exc: UserError) -> str:
    """The one line the CLI prints on stderr for a refusal under DANLU_JSON_ERRORS."""
    return json.dumps(error_record(exc), ensure_ascii=False)


def error_from_json(items: list[dict[str, Any]]) -> ConfigError:
    """A child's refusal (error_json's items) as an error of this process, with the problems the child had."""
    return ConfigError([problem_from_json(item) for item in items])


def _problems_in(stderr: str) -> list[Problem]:
    """The problems of the JSON line a refusing child ends its stderr with (error_json), or []."""
    last = stderr.rstrip().rpartition("\n")[2]
    try:
        return [problem_from_json(item) for item in json.loads(last)["errors"]] if last.startswith("{") else []
    except (ValueError, KeyError, TypeError):
        return []


# --- blocking --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChildResult:
    args: list[str]
    code: int
    stdout: str
    stderr: str
    problems: list[Problem] = field(default_factory=list)  # what it refused for (exit status 2), as it said

    @property
    def ok(self) -> bool:
        return self.code == EXIT_OK

    @property
    def refused(self) -> bool:
        """Exit status 2 with its problems: the input was wrong and the child said what to do."""
        return self.code == EXIT_BAD_INPUT and bool(self.problems)

    @property
    def json(self) -> Any:
        """The JSON the command printed as its last line of stdout (e.g. `lr-find --json`)."""
        return json.loads(self.stdout.rstrip().rpartition("\n")[2])

    def tail(self, lines: int = TAIL_LINES) -> list[str]:
        """The last lines of stderr: a traceback's end says what broke."""
        return self.stderr.strip().splitlines()[-lines:]

    def check(self) -> ChildResult:
        """This result when the command succeeded; else its refusal as a ConfigError with the child's problems,
        or ChildFailed with the end of its stderr."""
        if self.ok:
            return self
        if self.refused:
            raise ConfigError(self.problems)
        raise ChildFailed(f"`python -m trainer {self.args[0]}` failed (exit status {self.code})",
                          " / ".join(self.tail(3)))


def run(args: Sequence[str | Path], timeout_s: float | None = None) -> ChildResult:
    """Run `python -m trainer ARGS` and wait for it; ChildFailed if it cannot start or runs past timeout_s."""
    args = [str(arg) for arg in args]
    try:
        done = subprocess.run(trainer_argv(args), env=child_env(json_errors=True), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, encoding="utf-8", errors="replace", check=False,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ChildFailed(f"`python -m trainer {args[0]}` did not finish within {timeout_s:g} s") from None
    except OSError as exc:
        raise ChildFailed(f"`python -m trainer` could not start: {exc}") from None
    problems = _problems_in(done.stderr) if done.returncode == EXIT_BAD_INPUT else []
    return ChildResult(args, done.returncode, done.stdout, done.stderr, problems)


# --- detached and piped ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Detached:
    pid: int
    started_at: float
    popen: subprocess.Popen


def start_detached(args: Sequence[str | Path], folder: Path, json_errors: bool = False) -> Detached:
    """Start `python -m trainer ARGS` and return at once. It gets its own process group (its own session on
    POSIX): a stop can signal it and every process it starts, and a Ctrl+C in this terminal does not reach it.
    Its stdout and stderr go to folder/console.log; folder/process.json records {pid, started_at, argv} (whole
    or not at all), so a restarted GUI finds it again. json_errors: a refusal ends console.log as one JSON line
    (error_json), for a caller that shows it in its own words rather than the log."""
    argv = trainer_argv(args)
    isolation: dict[str, Any] = ({"start_new_session": True} if os.name == "posix"
                                 else {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP})
    with open(folder / CONSOLE_LOG, "ab") as console:
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                 env=child_env(json_errors), **isolation)
    started_at = time.time()
    record = {"pid": popen.pid, "started_at": started_at, "argv": argv}
    atomic_write_text(folder / PROCESS_FILE, json.dumps(record, ensure_ascii=False, indent=1))
    return Detached(popen.pid, started_at, popen)


def start_piped(args: Sequence[str | Path], stderr: IO[bytes] | None = None,
                stdout: IO[bytes] | int = subprocess.PIPE) -> subprocess.Popen:
    """Start `python -m trainer ARGS` with a text pipe to its stdin and (unless `stdout` says where it goes
    instead) from its stdout, for a helper that reads one line per request; its stderr goes to `stderr` (default:
    this process's). It stays in this process's group: a Ctrl+C ends both, and it ends by itself when its stdin
    closes."""
    return subprocess.Popen(trainer_argv(args), stdin=subprocess.PIPE, stdout=stdout, stderr=stderr,
                            env=child_env(), text=True, encoding="utf-8", bufsize=1)
