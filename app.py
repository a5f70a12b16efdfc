"""Danlu's GUI: python app.py [--port N] [--listen --auth user:pass | --insecure] [--lang zh|en] [--no-browser]

Serves on 127.0.0.1 (port 7860, or the next free one) and opens the browser. The training runs in its own
process (python -m trainer train ...), so this page can be reloaded or restarted while it trains.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no usage reporting

from ui.i18n import LANGS, system_lang  # noqa: E402  (after the environment above)

DEFAULT_PORT = 7860
CSS_PATH = Path(__file__).resolve().parent / "ui" / "style.css"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python app.py", description="Danlu 丹炉: LoRA training GUI")
    parser.add_argument("--port", type=int, help=f"port to serve on (default: {DEFAULT_PORT} or the next free one)")
    parser.add_argument("--listen", action="store_true",
                        help="serve on all network interfaces (needs --auth, or --insecure to go without)")
    parser.add_argument("--auth", metavar="USER:PASSWORD", help="ask for this user name and password")
    parser.add_argument("--insecure", action="store_true", help="allow --listen without --auth")
    parser.add_argument("--lang", choices=LANGS, default=system_lang(),
                        help="page language (default: from the system locale)")
    parser.add_argument("--no-browser", action="store_true", help="do not open the browser")
    args = parser.parse_args(argv)
    if args.listen and not args.auth and not args.insecure:
        parser.error("--listen makes the page reachable from other computers: add --auth user:password "
                     "(or --insecure if the network is yours alone)")
    if args.auth and ":" not in args.auth:
        parser.error("--auth: write it as user:password")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ui.review import start_worker

    start_worker()  # torch loads in the worker while the page starts: the LR chart is ready when it shows

    from trainer.common.errors import UserError
    from ui import builtin_texts, settings
    from ui.app import MAX_SESSIONS, PAGE_HEAD, build_app
    from ui.tensorboard import free_port

    host = "0.0.0.0" if args.listen else "127.0.0.1"
    port = args.port or free_port("127.0.0.1", DEFAULT_PORT)
    try:
        initial = settings.load_form() or settings.demo_form()
    except (OSError, UserError) as exc:
        print(f"warning: the demo could not be prepared ({exc}); the form starts empty", file=sys.stderr)
        initial = {}
    blocks = build_app(args.lang, initial)
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    print(f"Danlu: http://{'127.0.0.1' if host == '127.0.0.1' else host}:{port}/")
    blocks.queue(default_concurrency_limit=4).launch(
        server_name=host, server_port=port, auth=auth, inbrowser=not args.no_browser, css_paths=[CSS_PATH],
        head=builtin_texts.head() + PAGE_HEAD, allowed_paths=[str(settings.home())], footer_links=[], quiet=True,
        state_session_capacity=MAX_SESSIONS,
        # Gradio's run history copies every event's inputs and outputs (and each widget's props) into the browser's
        # localStorage: with Danlu's 150-field form, seconds of script time per language switch (docs/benchmarks.md)
        run_history=False,
        # Gradio's own "is localhost reachable" probe gives up after one 3-second HEAD of the whole page and then
        # refuses to start; on a busy machine (a training running) that page takes longer. The server was just
        # bound on this machine, so skip the probe (its only effect in gradio 6).
        _frontend=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
