"""Loopback addresses: a free port to bind, and whether a host is this machine only."""

from __future__ import annotations

import ipaddress
import socket


def free_port() -> int:
    """A loopback TCP port free at the moment of asking (the caller binds it soon after)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, or ``localhost``) reaches this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # another name, or a Unix socket's path
        return False
