"""The CPU priority of timing experiments in a tier that CI runs at a lower one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def default_priority() -> Iterator[None]:
    """Processes started inside run at the default CPU priority (niceness 0), where this process
    may raise its own (root). CI runs the integration tier at a lower priority beside the lab
    tier; a test that measures time (a drill's servers, an exit deadline) would measure that
    setting instead of the code under test. (Linux keeps a niceness per thread: the calling
    thread's is raised, and children it starts inherit it.)"""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, min(before, 0))
    except OSError:  # not permitted: they run at this process's priority
        yield
        return
    try:
        yield
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, before)
