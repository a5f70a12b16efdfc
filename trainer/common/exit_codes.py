"""The exit status of every `python -m trainer` command: what the GUI and scripts read."""

EXIT_OK = 0
EXIT_FAILED = 1  # the work started and failed (a training crashed, a probe failed)
EXIT_BAD_INPUT = 2  # refused before starting: the error lines name the key or file and what to do
