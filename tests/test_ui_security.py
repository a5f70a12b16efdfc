"""What the GUI's HTTP server gives away: nothing without the password under --auth, and never a file outside the
folders Danlu serves, signed in or not (one `python app.py --auth` for the whole file)."""

from __future__ import annotations

import http.cookiejar
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO

START_TIMEOUT_S = 240
USER, PASSWORD = "me", "secret"
OUTSIDE = ["/etc/passwd", "{home}/../../../../etc/passwd", str(REPO / "app.py")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status(opener: urllib.request.OpenerDirector, url: str, data: bytes | None = None) -> tuple[int, bytes]:
    try:
        with opener.open(url, data=data, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture(scope="module")
def gui(tmp_path_factory):
    """A running `python app.py --auth me:secret` with its own DANLU_HOME; yields (url, home)."""
    home = tmp_path_factory.mktemp("danlu_home")
    port, log = _free_port(), home / "app.log"
    env = {**os.environ, "DANLU_HOME": str(home), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "wb") as output:
        process = subprocess.Popen([sys.executable, "app.py", "--no-browser", "--port", str(port), "--lang", "en",
                                    "--auth", f"{USER}:{PASSWORD}"], cwd=REPO, env=env, stdout=output,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(url):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield url, home
    finally:
        process.terminate()
        process.wait(30)


def _answers(url: str) -> bool:
    try:
        _status(urllib.request.build_opener(), url)
        return True
    except OSError:
        return False


def _signed_in(url: str) -> urllib.request.OpenerDirector:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    form = urllib.parse.urlencode({"username": USER, "password": PASSWORD}).encode()
    status, _ = _status(opener, url + "login", form)
    assert status == 200
    return opener


def test_without_the_password_nothing_is_served(gui):
    url, home = gui
    stranger = urllib.request.build_opener()
    assert _status(stranger, url + "config")[0] == 401
    assert _status(stranger, url + "gradio_api/info")[0] == 401
    status, _ = _status(stranger, url + "gradio_api/queue/join", b'{"fn_index": 0, "data": [], "session_hash": "x"}')
    assert status == 401
    for path in OUTSIDE:
        status, body = _status(stranger, url + "gradio_api/file=" + path.format(home=home))
        assert status in (401, 403) and b"root:" not in body


def test_signed_in_no_file_outside_the_served_folders(gui):
    url, home = gui
    user = _signed_in(url)
    assert _status(user, url + "config")[0] == 200  # the session works: the refusals below are the file route's
    for path in OUTSIDE:
        status, body = _status(user, url + "gradio_api/file=" + path.format(home=home))
        assert status == 403 and b"root:" not in body, path
    served = Path(home) / "served.txt"
    served.write_text("ok")
    assert _status(user, url + f"gradio_api/file={served}") == (200, b"ok")  # DANLU_HOME is served
