"""Danlu's GUI: the process runner (runner.py) and the run-directory reader (run_state.py); no torch here."""
