"""Pick free TCP ports for servers started by the tests."""

from __future__ import annotations

import collections
import socket
import threading

# Never hand out the port of a Redis (or anything else) that may already run on this machine.
RESERVED_PORTS = frozenset({6379, 8080})

# Ports recently handed out in this process: the kernel may offer the same port twice before the first
# consumer binds it, so remember a bounded window of them.
_recent: collections.deque[int] = collections.deque(maxlen=512)
_lock = threading.Lock()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if `port` can be bound on `host` right now (it may be taken again a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago.

    The port is found by binding port 0 and releasing it, so another process can still grab it before
    the caller binds it: callers that start servers must retry with a new port on a bind failure
    (RedisProcess does).
    """
    with _lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port in RESERVED_PORTS or port in _recent:
                continue
            _recent.append(port)
            return port
    raise RuntimeError(f"could not find a free TCP port on {host}")
