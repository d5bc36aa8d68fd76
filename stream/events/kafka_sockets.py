"""A fix for kafka-python 3.0's socket leak: a failed connection attempt (the broker down, or
refusing) raised without closing its socket, and the error kept it alive, so every reconnect
of a producer or consumer to an absent broker cost a file descriptor (71 in 1.5 s at a 10 ms
backoff). Installed once, on import of the modules that use kafka-python."""

from __future__ import annotations

import socket
from typing import Any

from kafka.net.inet import KafkaNetSocket


async def _connect_closing_on_failure(
    self: KafkaNetSocket,
    net: Any,
    addrinfo: tuple[Any, ...],
    socket_options: Any = (),
    timeout_at: float | None = None,
) -> socket.socket:
    """`KafkaNetSocket.connect`, closing the socket when the attempt fails."""
    family, sock_type, proto, _name, sockaddr = addrinfo
    sock: socket.socket = self.socket(family, sock_type, proto)
    try:
        sock.setblocking(False)
        for option in socket_options:
            sock.setsockopt(*option)
        connected: socket.socket = await self.sock_connect(
            net, sock, sockaddr, timeout_at=timeout_at
        )
        return connected
    except BaseException:
        sock.close()
        raise


def close_failed_sockets() -> None:
    """Install the fix (idempotent). Only the plain-socket connect is replaced; proxy socket
    classes keep their own."""
    KafkaNetSocket.connect = _connect_closing_on_failure
