"""A steady-state probe for drill tests: a system that takes a while to come back.

It stands for what the lab's slow machines showed (a failover that outlasts the method's pause,
a restarted site not yet ready after its rollback) on a drill that needs no lab, reading the
fault times from the drill's run context like any Skyfleet probe.
"""

from __future__ import annotations

import time

from skyfleet.drills import context


def steady_unless(after_fault: float = 0.0, after_rollback: float = 0.0) -> bool:
    """False for ``after_fault`` s after the fault and ``after_rollback`` s after its rollback
    (a negative figure: never again)."""
    run = context.current()
    if run is None:
        raise RuntimeError("steady_unless needs a running drill")
    now, fault = time.time(), run.fault
    for since, seconds in ((fault.at, after_fault), (fault.restored_at, after_rollback)):
        if since is not None and now >= since and (seconds < 0 or now < since + seconds):
            return False
    return True


def starve_load(seconds: float) -> bool:
    """Stop the drill's load process for ``seconds`` (SIGSTOP, then SIGCONT), as a machine too
    busy to run the load generator does."""
    import os
    import signal

    from skyfleet.drills.run import current as current_run

    run = current_run()
    if run is None or run.load is None or run.load.pid is None:
        raise RuntimeError("starve_load needs a running drill with its load")
    os.kill(run.load.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(run.load.pid, signal.SIGCONT)
    return True
