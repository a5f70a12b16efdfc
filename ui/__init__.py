"""Danlu's GUI: the Gradio page built from the schema, one module per tab; no torch here (docs/architecture.md)."""
