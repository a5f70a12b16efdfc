"""What `check` and the GUI say before a run: readiness, the step plan, the LR curve, advice."""
