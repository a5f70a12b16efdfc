"""Experiments around a training: side-by-side runs (sweeps), their comparison, the learning-rate finder."""
