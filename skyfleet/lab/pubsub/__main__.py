"""``python -m skyfleet.lab.pubsub --config FILE``: run the Pub/Sub server until SIGTERM.

Once it serves, it writes one JSON line on stdout: ``{"event": "ready", "ports": {...},
"messages": N}`` (the ports it listens on, by caller, and the messages recovered from its data
folder). A bad config or an unusable data folder exits with code 2 and says what is wrong.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from skyfleet.lab.errors import LabConfigError
from skyfleet.lab.pubsub import build, load_config
from skyfleet.lab.pubsub.journal import JournalError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skyfleet.lab.pubsub", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="the server's JSON config file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s pubsub %(levelname)s %(message)s")
    try:
        config = load_config(args.config)
        server = build(config)
    except (LabConfigError, JournalError) as exc:
        print(f"pubsub: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"pubsub: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    print(json.dumps({"event": "ready", "ports": server.ports, "messages": server.engine.held()}), flush=True)
    stop.wait()
    server.stop()
    if server.engine.journal is not None:
        server.engine.journal.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
