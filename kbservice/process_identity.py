"""Which process owns a piece of in-flight work, and whether that process is certainly gone.

An identity is "host:pid:start" where start is the process's start time in clock ticks since boot (Linux
/proc), so a pid reused by a later process is not mistaken for the owner. Another machine's processes
cannot be checked: for them (and where /proc is missing) only a timeout can tell that the work was abandoned.
"""

from __future__ import annotations

import os
import socket
from functools import cache
from pathlib import Path


@cache
def current() -> str:
    """This process's identity."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid()) or 0}"


def is_gone(identity: str | None) -> bool:
    """True only when `identity` names a process of this host that is not running any more (or is a
    different process under the same pid); False when it runs, or cannot be checked from here."""
    if not identity:
        return False
    parts = identity.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname():
        return False
    try:
        pid, start = int(parts[1]), int(parts[2])
    except ValueError:
        return False
    if not Path("/proc/self/stat").exists():
        return False  # no /proc: cannot tell
    now = _start_ticks(pid)
    return now is None or (start != 0 and now != start)


def _start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time after boot), None when the process does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its closing one.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])
