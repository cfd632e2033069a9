"""Reusable test infrastructure: free ports, private redis-server processes, secauto node processes."""

from tests.support.ports import free_port, port_is_free
from tests.support.procs import SecautoProcess, pid_exists, write_config
from tests.support.redis_proc import RedisProcess

__all__ = ["RedisProcess", "SecautoProcess", "free_port", "pid_exists", "port_is_free", "write_config"]
