"""`python -m trainer try-server`: the try grids the GUI asks for, one JSON line each on stdin, rendered one after
another with the base model kept loaded between them (the client is trainer/try_lora/client.py).

    {"args": ["--run", "output/runs/...", "--strengths", "0,1", ...], "out": "output/runs/.../try/<time>"}

Each request is a `python -m trainer try ARGS --out OUT` without the model load when the base model and the run's
settings are those of the grid before: OUT gets the same files (progress.jsonl, cells/, grid.png, grid.json) and
its console.log the grid's messages. A grid that fails writes its error to progress.jsonl and console.log, and the
next one is served (with a fresh model after anything but a refusal: the failure may have left it half patched).
The server ends when its stdin closes (the GUI ended, or released the model for a training that needs the memory)
after the grids already asked for. OUT/STOP or a SIGTERM stops the current grid after its cell; a SIGTERM also
ends the server.
"""

from __future__ import annotations

import gc
import json
import signal
import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.common.errors import UserError
from trainer.common.exit_codes import EXIT_OK
from trainer.common.libraries import hide_unused, quiet_libraries
from trainer.run.state import CONSOLE_LOG
from trainer.try_lora.cli import check_try_args
from trainer.try_lora.grid import STOP_FILE, GridSpec

if TYPE_CHECKING:
    from trainer.try_lora.session import TrySession


class KeptModel:
    """The last base model loaded, given again while a grid asks for the same model and settings."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.session: TrySession | None = None

    def session_for(self, spec: GridSpec) -> TrySession:
        from trainer.try_lora.session import TrySession, sampling_config

        config = sampling_config(spec.base, spec.run)
        key = json.dumps([config.model_dump(mode="json"), _file_state(config.pretrained_model_name_or_path)])
        if key != self.key or self.session is None:
            self.drop()
            self.session, self.key = TrySession(config), key
        return self.session

    def drop(self) -> None:
        """Let the model go (its memory back to the GPU's pool and the system)."""
        self.session = self.key = None
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()


def _file_state(path: str) -> list[int] | None:
    """A base model file's mtime and size (a file replaced under the same name is loaded again)."""
    try:
        stat = Path(path).expanduser().stat()
    except OSError:
        return None
    return [stat.st_mtime_ns, stat.st_size]


def serve(requests: Iterable[str], kept: KeptModel | None = None) -> int:
    """Render each request line's grid until the requests end."""
    kept = kept or KeptModel()
    ending = {"asked": False, "rendering": False}

    def on_sigterm(*_: object) -> None:
        ending["asked"] = True
        if not ending["rendering"]:  # waiting for a request: end now (a grid ends after its cell)
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        for line in requests:
            if ending["asked"]:
                break
            ending["rendering"] = True
            serve_one(json.loads(line), kept, lambda: ending["asked"])
            ending["rendering"] = False
    except KeyboardInterrupt:  # Ctrl+C in the GUI's terminal reaches its whole process group; a SIGTERM
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        kept.drop()
    return EXIT_OK


def serve_one(request: dict[str, Any], kept: KeptModel, ending: Callable[[], bool] = lambda: False) -> None:
    """One grid into request["out"]; its messages and any failure in out/console.log."""
    from trainer.try_lora.render import GridWriter, render_grid

    out = Path(request["out"])
    out.mkdir(parents=True, exist_ok=True)
    with open(out / CONSOLE_LOG, "a", encoding="utf-8") as log:
        def say(line: str) -> None:
            print(line, file=log, flush=True)

        try:
            spec = check_try_args([str(arg) for arg in request["args"]])
        except UserError as exc:  # the GUI checked it; a file removed since then
            say(f"error: {exc.message}")
            writer = GridWriter(out, say)
            writer.failed(exc)
            writer.close()
            return
        try:
            render_grid(spec, out, lambda: ending() or (out / STOP_FILE).exists(), say, kept.session_for)
        except UserError as exc:
            say(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""))
        except Exception:  # noqa: BLE001 - the grid failed (out of memory, a broken file); the server serves on
            say(traceback.format_exc())
            kept.drop()


def serve_stdio() -> int:
    """serve() on stdin (its stdout and stderr: the server's log, trainer/try_lora/client.py)."""
    hide_unused(set())
    quiet_libraries()
    return serve(sys.stdin)


def add_server_command(commands) -> None:
    parser = commands.add_parser("try-server", help="(for the GUI) render try grids asked on stdin, keeping the "
                                 "base model loaded between them", description=__doc__.split("\n\n")[0])
    parser.set_defaults(func=lambda _args: serve_stdio())

