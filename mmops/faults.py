"""Fault injection for crash tests: `MMOPS_FAULT=<point>:<n>` kills the process (SIGKILL, as `kill -9` would)
the n-th time execution reaches `point(<point>)`. Unset (always, outside tests), a point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get("MMOPS_FAULT")
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
