"""Ctrl-C and SIGTERM held while a tracker writes to its SQLite store."""

from __future__ import annotations

import functools
import signal
import threading

from experiments.store import sqlite_path

STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def uninterrupted(method):
    """Hold Ctrl-C and SIGTERM while a tracker's ``method`` writes to its SQLite store, and deliver them once it
    has: an interrupt inside a SQLite transaction leaves the database locked, so the run could then not be
    closed. The same signal a second time stops at once."""

    @functools.wraps(method)
    def held(tracker, *args, **kwargs):
        uri = getattr(tracker, "uri", None)  # None until start() resolves it
        if threading.current_thread() is not threading.main_thread() or (uri and sqlite_path(uri) is None):
            return method(tracker, *args, **kwargs)  # only the main thread gets signals; servers have no lock
        caught: list[int] = []

        def restore() -> None:
            for number, handler in previous.items():
                signal.signal(number, handler)

        def hold(signum, frame) -> None:
            caught.append(signum)
            if caught.count(signum) > 1:  # asked twice: stop now, whatever is being written
                caught.clear()
                restore()
                signal.raise_signal(signum)

        previous = {number: signal.signal(number, hold) for number in STOPPING_SIGNALS}
        try:
            return method(tracker, *args, **kwargs)
        finally:
            restore()
            for number in dict.fromkeys(caught):
                signal.raise_signal(number)  # now its own handler runs: Ctrl-C or SIGTERM as usual

    return held
