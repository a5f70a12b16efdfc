"""The two folders Danlu knows by itself: the repository it runs from and the user's home for its things."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # holds trainer/, ui/ and presets/; child processes import from here


def danlu_home() -> Path:
    """Where Danlu keeps the user's things (the GUI's last form, user presets): $DANLU_HOME or ~/.danlu."""
    return Path(os.environ.get("DANLU_HOME") or Path.home() / ".danlu").expanduser()
