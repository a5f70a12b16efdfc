"""Work split among the training processes: each encodes its share of the latents and captions to cache (and
writes its share's disk entries), then every process receives the others' results. sd-scripts splits caching so;
no process recomputes another's share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Share:
    index: int  # this process's number
    count: int  # processes in all
    gather: Callable[[Any], list[Any]]  # one object from each process -> all of them, in process order

    def mine(self, items: list[T]) -> list[T]:
        """This process's part of items (the same list in every process)."""
        return items[self.index::self.count]

    def merge(self, results: dict) -> dict:
        """Every process's results in one dict."""
        return {key: value for part in self.gather(results) for key, value in part.items()}


ALONE = Share(0, 1, lambda obj: [obj])


def shares_text(counts: list[int]) -> str:
    """'10', or '10 (5 + 5 by 2 processes)' for a log line."""
    total = sum(counts)
    return str(total) if len(counts) == 1 else f"{total} ({' + '.join(map(str, counts))} by {len(counts)} processes)"
