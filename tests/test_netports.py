"""Ports for the servers `lada up`, the benches and the tests start: below the kernel's
ephemeral range, where no outgoing connection can take one before its server binds it."""

from __future__ import annotations

import socket
from pathlib import Path

from lada.netports import LOWEST_PORT, ephemeral_low, free_ports, pick_ports


def test_free_ports_are_distinct_and_below_the_kernels_ephemeral_range() -> None:
    low = ephemeral_low()
    ports = free_ports(8)
    assert len(set(ports)) == 8
    if low is not None and low - LOWEST_PORT >= 8 * 64:  # room below the range (Linux: 32768)
        assert all(LOWEST_PORT <= port < low for port in ports)


def test_a_port_something_listens_on_is_passed_over() -> None:
    busy, spare = free_ports(2)
    with socket.socket() as server:
        server.bind(("127.0.0.1", busy))
        server.listen()
        assert pick_ports(1, "127.0.0.1", [busy, spare]) == [spare]


def test_a_candidate_offered_twice_is_returned_once() -> None:
    (port,) = free_ports(1)
    assert pick_ports(2, "127.0.0.1", [port, port]) == [port]


def test_the_ephemeral_range_is_read_from_the_kernels_file(tmp_path: Path) -> None:
    source = tmp_path / "ip_local_port_range"
    source.write_text("32768\t60999\n")
    assert ephemeral_low(source) == 32768
    assert ephemeral_low(tmp_path / "missing") is None
