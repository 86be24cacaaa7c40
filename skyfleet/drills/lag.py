"""The replication-lag sampler process: ``python -m skyfleet.drills.lag STATE_DIR``.

The lab's sampler polls replicas in a tight loop. Run inside the drill's process it would take
the GIL from the load generator and push its requests off schedule, so the drill runs it as a
child process that prints one JSON line per 1 s window, every 3 s (a one-in-three duty cycle
keeps its CPU out of the system under test), until its stdin closes.
"""

from __future__ import annotations

import json
import sys
import threading

from skyfleet.drills.target import LabTarget


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    target = LabTarget(state_dir=args[0])
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    while not stop.is_set():
        try:
            line = {"samples": target.sample_lag(window_seconds=1.0)}
        except Exception as exc:  # e.g. no primary during a failover: report, carry on
            line = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(line), flush=True)
        stop.wait(2.0)


if __name__ == "__main__":
    main()
