"""Presets: Danlu's versioned preset files, the shipped and user library, and importers of other tools' configs."""
