"""What every benchmark records: when, on what machine."""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.node()} · {os.cpu_count()} cores · {cpu} · {mem_gb:.0f} GiB · "
        f"Python {platform.python_version()} · {platform.system()} {platform.release()}"
    )


def stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def time_command(argv: Sequence[str], runs: int, **kwargs: object) -> list[float]:
    """Wall-clock seconds of ``runs`` fresh runs of a command (cold: a new process each)."""
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(list(argv), check=True, capture_output=True, **kwargs)  # type: ignore[call-overload]
        out.append(time.perf_counter() - started)
    return out


def describe(samples: Sequence[float]) -> str:
    med, lo, hi = statistics.median(samples), min(samples), max(samples)
    return f"median {med:.2f} s (min {lo:.2f}, max {hi:.2f}, n={len(samples)})"


PY = sys.executable
