"""A userspace delay line on one site's link: latency without the netem qdisc.

Some kernels (the lab's Firecracker VM kernel) ship without ``sch_netem``, so ``tc`` cannot
delay packets. This process puts itself in the site's link instead, in the root namespace,
changing nothing inside the site's namespace (addresses, MACs and sockets stay as they are,
so TCP connections survive the fault and its undo):

- A TAP device ``sfd…`` joins the lab bridge in place of the site's host-side veth.
- The host-side veth ``sfh…`` moves to a private bridge ``sfs…`` that is kept down: a
  disabled bridge port drops every frame before the kernel's own stack sees it (no ARP
  answers, no IP input on that device), while this process still reads it through an
  ``AF_PACKET`` socket, which taps frames before the bridge does.
- Frames read on one side are written to the other side ``delay_ms`` (± a uniform
  ``jitter_ms``) later. Each direction is delayed, so a round trip gets ``2 × delay_ms``,
  as netem on both ends of the link would give. Frames are never reordered: a frame is
  released no earlier than the one before it (netem with jitter reorders; TCP would then
  see spurious duplicate ACKs). Each direction holds at most ``LIMIT`` frames and drops
  the rest, as a qdisc's queue limit does.
- Both sides use the virtio-net header (``PACKET_VNET_HDR``, ``IFF_VNET_HDR``), so GSO
  super-frames and partial checksums cross unchanged, at any frame size.

On SIGTERM it releases every queued frame at once, puts the veth back on the lab bridge and
deletes its private bridge; the TAP device disappears when the process exits. If it is
SIGKILLed instead, ``skyfleet.lab.network.clear_delay`` does the same repair.

Run as ``python -m skyfleet.lab.delayline --link VETH --bridge BR --tap TAP --sink SINK
--delay-ms D [--jitter-ms J]`` (root). It prints ``ready`` once it forwards.
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable

LIMIT = 10000  # frames queued per direction, at most
_TUNSETIFF = 0x400454CA
_IFF_TAP, _IFF_NO_PI, _IFF_VNET_HDR = 0x0002, 0x1000, 0x4000
_ETH_P_ALL = 0x0003
_SOL_PACKET, _PACKET_VNET_HDR, _PACKET_IGNORE_OUTGOING = 263, 15, 23
_PACKET_OUTGOING = 4
_SO_RCVBUFFORCE, _SO_SNDBUFFORCE = 33, 32
_BUFFER = 1 << 18  # a GSO super-frame (64 KiB, or more with BIG TCP) plus its header
_BATCH = 256  # frames read from one side before the other side gets its turn


class _Stop(Exception):
    pass


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")


def open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TAP | _IFF_NO_PI | _IFF_VNET_HDR))
    return fd


def open_link(name: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
    sock.setsockopt(_SOL_PACKET, _PACKET_VNET_HDR, 1)
    sock.setsockopt(_SOL_PACKET, _PACKET_IGNORE_OUTGOING, 1)
    sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 1 << 24)
    sock.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, 1 << 24)
    sock.bind((name, _ETH_P_ALL))
    sock.setblocking(False)
    return sock


class Direction:
    """One direction of the line: frames in arrival order, each with its release time."""

    def __init__(self, write: Callable[[bytes], object], delay: float, jitter: float) -> None:
        self.write = write
        self.delay, self.jitter = delay, jitter
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.last = 0.0
        self.forwarded = self.dropped = 0

    def push(self, frame: bytes, now: float) -> None:
        if len(self.queue) >= LIMIT:
            self.dropped += 1
            return
        due = now + self.delay + (random.uniform(-self.jitter, self.jitter) if self.jitter else 0.0)
        self.last = max(due, self.last)
        self.queue.append((self.last, frame))

    def release(self, now: float) -> None:
        while self.queue and self.queue[0][0] <= now:
            self._send(self.queue.popleft()[1])

    def flush(self) -> None:
        while self.queue:
            self._send(self.queue.popleft()[1])

    def next_due(self) -> float | None:
        return self.queue[0][0] if self.queue else None

    def _send(self, frame: bytes) -> None:
        try:
            self.write(frame)
            self.forwarded += 1
        except OSError:  # a full buffer or a link that is down (a partition): the frame is lost
            self.dropped += 1


def run(link: str, bridge: str, tap: str, sink: str, delay_ms: float, jitter_ms: float) -> None:
    def stop(signum: int, frame: object) -> None:
        raise _Stop

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    tap_fd = open_tap(tap)
    link_sock = open_link(link)
    ipv6 = f"/proc/sys/net/ipv6/conf/{tap}/disable_ipv6"
    if os.path.exists(ipv6):  # the TAP is only a bridge port; it has nothing to say itself
        with open(ipv6, "w") as out:
            out.write("1")
    to_site = Direction(link_sock.send, delay_ms / 1000, jitter_ms / 1000)
    from_site = Direction(lambda frame: os.write(tap_fd, frame), delay_ms / 1000, jitter_ms / 1000)
    try:
        _ip("link", "add", sink, "type", "bridge")
        _ip("link", "set", tap, "master", bridge, "up")
        _ip("link", "set", link, "master", sink)  # leaves the lab bridge in the same step
        print("ready", flush=True)
        poller = select.epoll()
        poller.register(tap_fd, select.EPOLLIN)
        poller.register(link_sock.fileno(), select.EPOLLIN)
        while True:
            dues = [d for d in (to_site.next_due(), from_site.next_due()) if d is not None]
            timeout = max(0.0, min(dues) - time.monotonic()) if dues else 1.0
            for fd, _ in poller.poll(timeout):
                for _ in range(_BATCH):
                    try:
                        if fd == tap_fd:
                            to_site.push(os.read(tap_fd, _BUFFER), time.monotonic())
                        else:
                            frame, address = link_sock.recvfrom(_BUFFER)
                            if address[2] != _PACKET_OUTGOING:
                                from_site.push(frame, time.monotonic())
                    except OSError:  # drained (EAGAIN), or the link went down (a partition)
                        break
            now = time.monotonic()
            to_site.release(now)
            from_site.release(now)
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        to_site.flush()
        from_site.flush()
        subprocess.run(["ip", "link", "set", link, "master", bridge], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", sink], capture_output=True, check=False)
        print(
            f"stopped: to site {to_site.forwarded} frames forwarded, {to_site.dropped} dropped; "
            f"from site {from_site.forwarded} forwarded, {from_site.dropped} dropped",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skyfleet.lab.delayline", description=__doc__)
    parser.add_argument("--link", required=True, help="the site's host-side veth")
    parser.add_argument("--bridge", required=True, help="the lab bridge")
    parser.add_argument("--tap", required=True, help="name of the TAP device to create")
    parser.add_argument("--sink", required=True, help="name of the private bridge to create")
    parser.add_argument("--delay-ms", type=float, required=True)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    try:
        run(args.link, args.bridge, args.tap, args.sink, args.delay_ms, args.jitter_ms)
    except (OSError, RuntimeError) as exc:
        print(f"delay line failed: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
