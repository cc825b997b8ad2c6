"""Stopping what we started: a server started in a process group of its own is stopped as a whole group.

A group's leader can exit while other members live on (`airflow standalone` leaves its scheduler, DAG
processor, triggerer, API server and executor workers; `bentoml serve` its workers), orphaned to init and
holding ports and memory. So a stop waits for every member of the group, not the leader alone, and after
a grace period kills whatever is left, and says what it had to kill.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


def group_members(pgid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live process in process group `pgid` (zombies excluded)."""
    import psutil

    members = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE or os.getpgid(proc.pid) != pgid:
                continue
        except (ProcessLookupError, psutil.Error):
            continue
        members.append((proc.pid, " ".join(proc.info["cmdline"] or [])[:200]))
    return members


@dataclass
class Stopped:
    """How a group stopped: by itself after the signal, or with what had to be killed."""

    pgid: int
    seconds: float
    killed: list[tuple[int, str]] = field(default_factory=list)

    def __str__(self) -> str:
        if not self.killed:
            return f"process group {self.pgid} stopped in {self.seconds:.1f} s"
        names = "; ".join(f"{pid} {cmd}" for pid, cmd in self.killed[:8])
        more = f" and {len(self.killed) - 8} more" if len(self.killed) > 8 else ""
        return (f"process group {self.pgid} outlived its {self.seconds:.0f} s grace period: killed "
                f"{len(self.killed)} processes ({names}{more})")


def _wait_group(proc: subprocess.Popen | None, pgid: int, deadline: float) -> bool:
    """Until no member of the group is left (reaping `proc`, our child, as it exits) or the deadline."""
    while True:
        if proc is not None:
            proc.poll()
        if not group_members(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def stop_group(proc: subprocess.Popen | int, grace: float = 30.0, sig: int = signal.SIGTERM) -> Stopped:
    """Stop a process group: `sig` to every member, wait up to `grace` seconds for all of them (not only
    the leader), then SIGKILL the rest. `proc` is a Popen started with `start_new_session=True` (its pid is
    the group's id), or a group id."""
    popen = proc if isinstance(proc, subprocess.Popen) else None
    pgid = popen.pid if popen is not None else int(proc)  # type: ignore[arg-type]
    start = time.monotonic()
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    if _wait_group(popen, pgid, start + grace):
        if popen is not None:
            popen.wait(timeout=5)  # it has exited (a zombie is no member): reap it
        return Stopped(pgid, time.monotonic() - start)
    left = group_members(pgid)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _wait_group(popen, pgid, time.monotonic() + 10)
    if popen is not None:
        try:
            popen.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
            pass
    stopped = Stopped(pgid, grace, left)
    log.warning("%s", stopped)
    return stopped
