"""Fault injection for crash and race tests. `MMOPS_FAULT=<point>:<n>` kills the process (SIGKILL, as `kill -9`
would) the n-th time execution reaches `point(<point>)`; `MMOPS_FAULT=<point>:<n>:sleep=<seconds>` stalls it
there instead, from the n-th time on (to hold a race window open); `MMOPS_FAULT=<point>:<n>:raise` raises
RuntimeError there from the n-th time on (a component that fails without dying). Unset (always, outside tests), a point
costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
import time

_hits: dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get("MMOPS_FAULT")
    if not spec:
        return
    target, _, rest = spec.partition(":")
    if target != name:
        return
    count, _, action = rest.partition(":")
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] < int(count or 1):
        return
    if action.startswith("sleep="):
        time.sleep(float(action.removeprefix("sleep=")))
    elif action == "raise":
        raise RuntimeError(f"injected fault at {name} (MMOPS_FAULT)")
    else:
        os.kill(os.getpid(), signal.SIGKILL)
