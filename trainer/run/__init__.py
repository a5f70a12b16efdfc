"""The run directory and the processes that write it: events, the reader, starting and stopping trainings."""
