"""Who holds a lock, recorded so that another process can tell for sure that the holder is gone.

A host name and a pid do not name a process: containers often share a host name
(the image's, or one set by hand), and each has its own pid namespace in which
the same pids come round again (the main process of every container is pid 1).
So the owner record also holds the pid namespace (``/proc/self/ns/pid``), the
boot (``/proc/sys/kernel/random/boot_id``) and the process's start time
(field 22 of ``/proc/<pid>/stat``, in clock ticks since boot), and
:func:`owner_gone` says "gone" only when all of them agree that the owner was a
process of this very pid namespace, since this boot, that no longer runs (its
pid is free, or now belongs to a process started at another time). Anything
unknown (no ``/proc``, an owner record written without these fields, a
process whose start time cannot be read) means "not sure": the caller waits
for the lock's expiry, as it does for an owner on another host.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from serving.embedded import pid_alive

PROC = Path("/proc")    # where the identity is read; a test points it at a folder without it


def _read(path: Path, link: bool = False) -> Optional[str]:
    try:
        return (os.readlink(path) if link else path.read_text()).strip() or None
    except OSError:
        return None


def start_time(pid: int) -> Optional[str]:
    """Field 22 of ``/proc/<pid>/stat`` (when the process started, in clock ticks since boot), or None."""
    stat = _read(PROC / str(pid) / "stat")
    if stat is None:
        return None
    fields = stat.rsplit(")", 1)[-1].split()    # the name in parentheses may hold spaces and ')'
    return fields[19] if len(fields) > 19 else None   # fields[0] is field 3 (the state)


def identity() -> Dict[str, Any]:
    """This process as an owner record: host, pid, pid namespace, boot id and start time (None where
    ``/proc`` does not tell)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pidns": _read(PROC / "self" / "ns" / "pid", link=True),
            "boot_id": _read(PROC / "sys" / "kernel" / "random" / "boot_id"), "start": start_time(pid)}


def owner_gone(owner: Mapping[str, Any]) -> bool:
    """Whether the process an owner record names surely no longer runs (see the module's docstring).

    False for an owner on another host, in another pid namespace or boot, and wherever something
    needed is unknown. This very process counts as gone: one lock per process at a time, so a
    record of its own is one it left behind."""
    me = identity()
    if owner.get("host") != me["host"]:
        return False
    for key in ("pidns", "boot_id"):
        if not me[key] or owner.get(key) != me[key]:
            return False
    try:
        pid = int(owner.get("pid", -1))
    except (TypeError, ValueError):
        return False
    started = owner.get("start")
    if pid <= 0 or not started:
        return False
    if pid == me["pid"]:
        return True    # ourselves, or a process before us with our pid: either way not another holder
    if not pid_alive(pid):
        return True
    now = start_time(pid)
    return now is not None and now != str(started)   # the pid was reused by a process started later
