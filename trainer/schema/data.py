"""Model effect tab, caption and augmentation groups."""

from __future__ import annotations

from .base import SchemaPart


class DataFields(SchemaPart):
    pass
