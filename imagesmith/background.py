"""Slow work started in a thread while the build goes on: its result, or its error, is
handed to whoever asks for it (a ``Future``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


def start(work: Callable[[], T], name: str, *, daemon: bool = False) -> Future[T]:
    """``work()`` in a thread of its own. ``daemon``: the process may exit without waiting
    for it (work that only reads)."""
    done: Future[T] = Future()

    def run() -> None:
        try:
            done.set_result(work())
        except BaseException as exc:  # handed to whoever waits for the result
            done.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=daemon).start()
    return done
