"""Model effect tab, loss and noise group."""

from __future__ import annotations

from .base import SchemaPart


class LossFields(SchemaPart):
    pass
