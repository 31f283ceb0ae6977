"""Ports for the servers a command starts itself: `lada up`, the benches, the tests.

A port found by binding port 0 comes from the kernel's ephemeral range, the range it also
hands to every outgoing connection. Between choosing such a port and the child process
binding it, any connection on the machine may take it: a `lada up` beside a Ray sweep
failed so (2026-12-05, "Address already in use" on 127.0.0.1:41511). Below that range the
kernel hands out nothing by itself, so a port chosen there stays free unless another
program binds that very number.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 20000  # above Ray's default worker ports (10002-19999) and most fixed services
TRIES_PER_PORT = 64


def ephemeral_low(source: Path = EPHEMERAL_RANGE) -> int | None:
    """The first port of the kernel's ephemeral range; None where it cannot be read."""
    try:
        return int(source.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free now, below the ephemeral range where it leaves room
    (else the kernel's own choice); all are held at once, so none is returned twice."""
    low = ephemeral_low()
    if low is not None and low - LOWEST_PORT >= count * TRIES_PER_PORT:
        rng = random.Random()
        tries = (rng.randrange(LOWEST_PORT, low) for _ in range(count * TRIES_PER_PORT))
        found = pick_ports(count, host, tries)
        if len(found) == count:
            return found
    return pick_ports(count, host, [0] * count)


def pick_ports(count: int, host: str, candidates: Iterable[int]) -> list[int]:
    """Up to `count` distinct ports of `candidates` that bind now (0: the kernel picks)."""
    found: list[int] = []
    with ExitStack() as stack:
        for candidate in candidates:
            if len(found) == count:
                break
            if candidate and candidate in found:
                continue
            sock = stack.enter_context(socket.socket())
            try:
                sock.bind((host, candidate))
            except OSError:
                continue
            found.append(int(sock.getsockname()[1]))
    return found
