"""Stopping what we started: a server started in a process group of its own is stopped as a whole group,
with every process it started.

A group's leader can exit while other members live on (`airflow standalone` leaves its scheduler, DAG
processor, triggerer, API server and executor workers), orphaned to init and holding ports and memory; and
some children leave the group (BentoML's workers run in sessions of their own). So a stop waits for every
member of the group and every descendant of the leader, not the leader alone, and after a grace period kills
whatever is left, and says what it had to kill.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


def _tree(pids: set[int]) -> set[int]:
    """`pids` and every live descendant of theirs."""
    import psutil

    found = set()
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.add(pid)
            found |= {c.pid for c in proc.children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE}
        except psutil.Error:
            continue
    return found


def _named(pids: set[int]) -> list[tuple[int, str]]:
    import psutil

    out = []
    for pid in sorted(pids):
        try:
            out.append((pid, " ".join(psutil.Process(pid).cmdline())[:200]))
        except psutil.Error:
            continue
    return out


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


def _alive(pgid: int, tree: set[int]) -> set[int]:
    """What is left of a group and of the processes it started (some, like BentoML's workers, put themselves
    in sessions of their own: the group alone would miss them)."""
    tree &= _tree(tree)  # the still-live ones, and their children
    return {pid for pid, _ in group_members(pgid)} | tree


def _wait_group(proc: subprocess.Popen | None, pgid: int, tree: set[int], deadline: float) -> bool:
    """Until nothing of the group and its tree is left (reaping `proc`, our child, as it exits) or the
    deadline."""
    while True:
        if proc is not None:
            proc.poll()
        if not _alive(pgid, tree):
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
    tree = _tree({pid for pid, _ in group_members(pgid)})  # before the signal: the leader still knows its children
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    if _wait_group(popen, pgid, tree, start + grace):
        if popen is not None:
            popen.wait(timeout=5)  # it has exited (a zombie is no member): reap it
        return Stopped(pgid, time.monotonic() - start)
    left = _named(_alive(pgid, tree))
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid, _ in left:  # members of other groups and sessions, started by this one
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _wait_group(popen, pgid, tree, time.monotonic() + 10)
    if popen is not None:
        try:
            popen.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
            pass
    stopped = Stopped(pgid, grace, left)
    log.warning("%s", stopped)
    return stopped
