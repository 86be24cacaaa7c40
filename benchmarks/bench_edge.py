"""The lab edge's failover timing: how long until the emulated Route 53 notices a lost site,
and how long until a client that honours the TTL gets answers from the next site.

The edge is the shipped edge-prod plan (health checks, failover records, TTL) served by the
lab DNS server process; the sites are small HTTPS servers on loopback; the client is an
open-loop httpx load (20 requests/s) through the caching resolver, with no retry. The primary
site is cut (listener closed, open connections reset) once every checker has seen it up.

    .venv/bin/python benchmarks/bench_edge.py                  # the plan's settings
    .venv/bin/python benchmarks/bench_edge.py --interval 1     # a shorter check interval

Detection: the check's unhealthy transition minus the cut. Client switch: the first answer
from the secondary minus the cut. Failed requests: between the cut and the switch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _common import machine, stamp

from skyfleet.lab import dns
from skyfleet.lab.resolver import AsyncResolvingTransport, CachingResolver
from skyfleet.lab.route53 import Edge
from skyfleet.testing.edge import GLOBAL_NAME, TestCA, dns_server, edge, sites

RATE = 20.0  # requests per second
SITE_TTL = 60  # an ALB's A records have a 60 s TTL


async def load(
    url: str, transport: AsyncResolvingTransport, stop: asyncio.Event, out: list[dict[str, Any]]
) -> None:
    """Fixed-rate requests (each on its own schedule, so a slow one delays no other)."""
    async with httpx.AsyncClient(transport=transport, timeout=2.0) as client:

        async def one() -> None:
            t = time.time()
            try:
                response = await client.get(url)
                out.append({"t": t, "ok": response.status_code == 200, "site": response.text.strip()})
            except httpx.HTTPError as exc:
                out.append({"t": t, "ok": False, "error": type(exc).__name__})

        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        for i in range(100_000):
            if stop.is_set():
                break
            await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)


def run(interval: float | None, directory: Path) -> dict[str, Any]:
    planned = edge()
    checks = planned.health_checks
    ca = TestCA()
    hosts = {c.site: c.fqdn or "" for c in checks}
    with contextlib.ExitStack() as stack:
        started, port = stack.enter_context(
            sites([(s, [h, GLOBAL_NAME]) for s, h in hosts.items()], ca, directory)
        )
        by_name = {s.name: s for s in started}
        update: dict[str, Any] = {"port": port}
        if interval is not None:
            update["request_interval"] = interval
        checks = tuple(c.model_copy(update=update) for c in checks)
        config = dns.DnsConfig.for_edge(
            Edge(records=planned.records, health_checks=checks),
            listen="127.0.0.1",
            port=0,
            events_file=directory / "events.jsonl",
            static_names={hosts[s.name]: ([s.address], SITE_TTL) for s in started},
        )
        server = stack.enter_context(dns_server(config, directory))
        check = checks[0]
        assert check.site == "aws-prod"
        ttl = next(r.ttl for r in planned.records if r.ttl)

        results: list[dict[str, Any]] = []
        stop = asyncio.Event()
        transport = AsyncResolvingTransport(CachingResolver(server.address), verify=ca.client_context())

        async def scenario() -> dict[str, Any]:
            runner = asyncio.create_task(load(f"https://{GLOBAL_NAME}:{port}/", transport, stop, results))
            # Every checker has seen the primary up, and the client has run a few seconds.
            deadline = time.monotonic() + 4 * check.request_interval + 10
            while time.monotonic() < deadline:
                ok = {
                    e["region"]
                    for e in server.events()
                    if e.get("event") == "probe" and e["site"] == "aws-prod"
                }
                if len(ok) == len(check.regions) and len(results) > 3 * RATE:
                    break
                await asyncio.sleep(0.2)
            cut = time.time()
            by_name["aws-prod"].stop()
            bound = cut + check.failure_threshold * check.request_interval + check.request_interval + ttl + 30
            switched = None
            while time.time() < bound:
                after = [r for r in results if r["t"] > cut]
                gcp = [r for r in after if r.get("site") == "gcp-prod"]
                if len(gcp) >= RATE:  # a second of answers from the secondary
                    switched = gcp[0]["t"]
                    break
                await asyncio.sleep(0.2)
            stop.set()
            await runner
            events = server.events()
            down = next(
                (
                    e
                    for e in events
                    if e.get("event") == "health" and e["site"] == "aws-prod" and not e["healthy"]
                ),
                None,
            )
            after = [r for r in results if r["t"] > cut]
            failed = [r for r in after if not r["ok"]]
            return {
                "interval_s": check.request_interval,
                "failure_threshold": check.failure_threshold,
                "ttl_s": ttl,
                "detection_s": round(down["t"] - cut, 2) if down else None,
                "client_switch_s": round(switched - cut, 2) if switched else None,
                "failed_requests": len([r for r in failed if switched is None or r["t"] < switched]),
                "requests_after_cut": len([r for r in after if switched is None or r["t"] < switched]),
                "last_failure_s": round(max(r["t"] for r in failed) - cut, 2) if failed else None,
            }

        return asyncio.run(scenario())


def main() -> int:
    parser = argparse.ArgumentParser(description="The lab edge's failover timing.")
    parser.add_argument("--interval", type=float, help="health-check interval, s (default: the plan's)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.interval, Path(tmp))
    result["measured"] = stamp()
    result["machine"] = machine()
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
