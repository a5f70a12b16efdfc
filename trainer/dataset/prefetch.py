"""Micro-batches built ahead: a background thread assembles the next batches while the device computes.

With cached latents the loader runs in the training process (worker processes would only copy the cache), so
without this the batches were built on the main thread between steps, with the device idle. The thread draws
from no global random generator (captions and augmentations are seeded per sample, the loader has its own
generator), so the batches and the run are the same with or without it.

On the CPU there is no device to wait for: the main thread computes all the time, and a second Python thread
only makes it wait for the GIL after every torch operation (a step of the tiny model took 1-2 ms longer:
docs/benchmarks.md, "Loop overhead"), so there the batches are built in turn (depth 0).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
_END = object()
DEPTH = 2  # batches built ahead on an accelerator: the next one ready, one more in the making


def depth_for(device_type: str) -> int:
    """How many batches to build ahead for a run on this kind of device (torch.device.type)."""
    return 0 if device_type == "cpu" else DEPTH


@dataclass(frozen=True)
class _Failed:
    error: BaseException


def ahead(items: Iterable[T], depth: int = DEPTH) -> Iterator[T]:
    """Yields `items` in order, produced by a daemon thread up to `depth` items ahead of the consumer (depth 0:
    each item when it is asked for, no thread). An exception raised while producing is raised here, at the item
    it stopped; closing the iterator early (a STOP, a failed step) lets the thread finish the item in hand and
    end."""
    if depth == 0:
        yield from items
        return
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
