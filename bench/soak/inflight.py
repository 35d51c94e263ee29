"""Which of our processes is inside a database transaction right now (preferably holding an
advisory lock, i.e. sweeping), so the nemesis can pause it mid-work rather than at random.

PostgreSQL names the client port of each backend; /proc maps that port to the process owning
the socket.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import psycopg

# Backends of one database inside a transaction, advisory-lock holders first.
_BUSY = """
SELECT a.client_port, bool_or(l.locktype = 'advisory') AS advisory
FROM pg_stat_activity a LEFT JOIN pg_locks l ON l.pid = a.pid AND l.granted
WHERE a.datname = %s AND a.xact_start IS NOT NULL AND a.client_port IS NOT NULL
  AND a.pid <> pg_backend_pid()
GROUP BY a.client_port ORDER BY advisory DESC
"""


def busy_client_ports(admin_url: str, database_url: str) -> list[tuple[int, bool]]:
    name = database_url.rpartition("/")[2]
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=2) as conn:
        rows = conn.execute(_BUSY, (name,)).fetchall()
    return [(int(port), bool(adv)) for port, adv in rows]


def _socket_inodes(port: int) -> set[str]:
    """Inodes of the local TCP sockets bound to ``port`` (IPv4 and IPv6)."""
    out: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and int(cols[1].rsplit(":", 1)[1], 16) == port:
                out.add(cols[9])
    return out


def owner_of_port(port: int, pids: Iterable[int]) -> int | None:
    """The pid among ``pids`` holding the socket whose local port is ``port``."""
    wanted = {f"socket:[{inode}]" for inode in _socket_inodes(port)}
    if not wanted:
        return None
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") in wanted:
                    return pid
            except OSError:
                continue
    return None
