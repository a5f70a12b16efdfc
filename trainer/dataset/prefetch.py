"""Micro-batches built ahead: a background thread assembles the next batches while the device computes.

With cached latents the loader runs in the training process (worker processes would only copy the cache), so
without this the batches were built on the main thread between steps, with the device idle. The thread draws
from no global random generator (captions and augmentations are seeded per sample, the loader has its own
generator), so the batches and the run are the same with or without it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
_END = object()


@dataclass(frozen=True)
class _Failed:
    error: BaseException


def ahead(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yields `items` in order, produced by a daemon thread up to `depth` items ahead of the consumer. An
    exception raised while producing is raised here, at the item it stopped; closing the iterator early (a
    STOP, a failed step) lets the thread finish the item in hand and end."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if done.is_set():
                    return
                buffer.put(item)
        except BaseException as exc:  # handed to the consumer, which raises it
            if not done.is_set():
                buffer.put(_Failed(exc))
            return
        if not done.is_set():
            buffer.put(_END)

    thread = threading.Thread(target=produce, name="danlu-batches", daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not _END:
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        done.set()
        _drain(buffer)  # a put blocked on a full buffer returns; the producer then sees `done` before its next put
        thread.join()


def _drain(buffer: queue.Queue) -> None:
    while True:
        try:
            buffer.get_nowait()
        except queue.Empty:
            return
