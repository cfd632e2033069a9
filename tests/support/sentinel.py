"""Redis Sentinel processes for tests: `redis-server <conf> --sentinel` on a free port."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tests.support.redis_proc import RedisProcess


class SentinelProcess(RedisProcess):
    """One sentinel monitoring ``service`` at 127.0.0.1:``primary_port`` with short timings.

    The config file is written at each start (the sentinel rewrites it while it runs, as usual).
    """

    def __init__(self, primary_port: int, *, dir: str | os.PathLike[str], service: str = "mymaster",
                 quorum: int = 2, down_after_ms: int = 1000, failover_timeout_ms: int = 3000,
                 extra_lines: Sequence[str] = ()) -> None:
        super().__init__(None, dir=dir)
        self.primary_port = primary_port
        self.service = service
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.extra_lines = list(extra_lines)

    @property
    def conf_path(self) -> Path:
        return self.dir / "sentinel.conf"

    def command(self, port: int) -> list[str]:
        lines = [
            f"port {port}",
            f"bind {self.host}",
            f"dir {self.dir}",
            "daemonize no",
            'logfile ""',
            f"sentinel monitor {self.service} {self.host} {self.primary_port} {self.quorum}",
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
            f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {self.service} 1",
            *self.extra_lines,
        ]
        self.conf_path.write_text("\n".join(lines) + "\n")
        return [self.binary, str(self.conf_path), "--sentinel"]
