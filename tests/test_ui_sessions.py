"""The GUI forgets a browser session when its tab closes, and keeps at most MAX_SESSIONS (issue 18: Gradio kept
about 0.7 MB per session, never freed)."""

from __future__ import annotations

from types import SimpleNamespace

from ui.app import MAX_SESSIONS, build_app


def test_a_closed_tab_frees_its_session():
    blocks = build_app("en", {})
    blocks.state_holder.set_blocks(blocks)
    blocks.state_holder["tab-1"], blocks.state_holder["tab-2"]  # noqa: B018 - a session is made on first use
    (unload,) = [dep.fn for dep in blocks.fns.values() if any(target[1] == "unload" for target in dep.targets)]
    unload(SimpleNamespace(session_hash="tab-1"))
    assert "tab-1" not in blocks.state_holder and "tab-2" in blocks.state_holder


def test_the_gui_keeps_at_most_max_sessions(monkeypatch):
    import gradio as gr

    import app
    from ui import app as page
    from ui import review, settings

    launched = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: launched.update(kwargs))
    monkeypatch.setattr(page, "build_app", lambda lang, initial: gr.Blocks())
    monkeypatch.setattr(review, "start_worker", lambda: None)
    monkeypatch.setattr(settings, "load_form", lambda: {})
    assert app.main(["--no-browser", "--port", "7999"]) == 0
    assert launched["state_session_capacity"] == MAX_SESSIONS < 1000
