"""Stopping a process group stops every member of it, not only its leader."""

import signal
import subprocess
import sys
import time

from mmops.processes import group_members, stop_group

# A leader that exits on SIGTERM at once, leaving a child that ignores SIGTERM (as `airflow standalone` left
# its scheduler and API server): waiting on the leader alone would return with the child still running.
LEADER = """
import signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"],
    stdout=subprocess.PIPE)
child.stdout.readline()
print(child.pid, flush=True)
time.sleep(600)
"""


def _start(code: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    child = int(proc.stdout.readline())
    return proc, child


def test_a_member_that_outlives_its_leader_is_killed_and_named() -> None:
    proc, child = _start(LEADER)
    assert {pid for pid, _ in group_members(proc.pid)} == {proc.pid, child}
    stopped = stop_group(proc, grace=2)
    assert proc.returncode is not None
    assert group_members(proc.pid) == []
    assert [pid for pid, _ in stopped.killed] == [child]  # only what ignored the signal had to be killed
    assert "killed 1 processes" in str(stopped) and str(child) in str(stopped)


def test_a_group_that_stops_by_itself_is_not_killed() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    time.sleep(0.2)
    stopped = stop_group(proc, grace=10, sig=signal.SIGINT)  # Ctrl-C: KeyboardInterrupt ends the sleep
    assert stopped.killed == [] and proc.returncode is not None and stopped.seconds < 10


def test_stopping_a_group_that_is_gone_is_a_no_op() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    proc.wait()
    assert stop_group(proc, grace=1).killed == []


# A child that leaves the group (a session of its own, as BentoML's workers do) and ignores SIGTERM.
ESCAPER = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"],
    stdout=subprocess.PIPE, start_new_session=True)
child.stdout.readline()
print(child.pid, flush=True)
time.sleep(600)
"""


def test_a_child_in_a_session_of_its_own_is_stopped_too() -> None:
    import os

    proc, child = _start(ESCAPER)
    assert os.getpgid(child) != proc.pid  # not a member of the group
    stopped = stop_group(proc, grace=2)
    assert [pid for pid, _ in stopped.killed] == [child]
    time.sleep(0.5)
    try:
        os.kill(child, 0)
        alive = open(f"/proc/{child}/stat").read().split()[2] != "Z"
    except ProcessLookupError:
        alive = False
    assert not alive
