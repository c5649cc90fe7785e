"""A free loopback port, for what binds one of its own (the embedded stack, Faust's web port)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback TCP port free at the moment of asking (the caller binds it soon after)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
