"""The audit log is a ledger: every event carries the hash of the one before, and `mmops audit verify` names
an edited, deleted or inserted event, on whichever database holds the catalog."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mmops import audit
from mmops.catalog import get_engine, session_scope
from tests.conftest import catalog_sql, run_mmops

pytestmark = pytest.mark.catalog  # the PostgreSQL pass runs these too (conftest)


def _append(n: int, domain: str = "security") -> None:
    for i in range(n):
        with session_scope() as s:
            audit.record(s, "trained", domain, f"training_run:{i}", actor="ci", accuracy=0.9 + i / 100,
                         note="naïve ✓")


def _verify() -> dict:
    with session_scope() as s:
        return audit.verify(s)


def test_events_chain_and_the_cli_says_intact(project: Path) -> None:
    _append(3)
    ids = [r[0] for r in catalog_sql(project, "SELECT id FROM audit_events ORDER BY id")]
    rows = catalog_sql(project, "SELECT prev_hash, hash FROM audit_events ORDER BY id")
    assert rows[0][0] is None and all(rows[i][0] == rows[i - 1][1] for i in (1, 2)) and len(set(rows)) == 3
    verdict = _verify()
    assert verdict == {"ok": True, "events": 3, "head": rows[-1][1], "problems": []}
    done = run_mmops(project, "audit", "verify", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["head"] == rows[-1][1], done.stdout + done.stderr
    listed = run_mmops(project, "audit", "--domain", "security", "--json")  # the listing is still `mmops audit`
    assert listed.returncode == 0 and [e["id"] for e in json.loads(listed.stdout)] == ids


@pytest.mark.parametrize("tamper, named, problem", [
    ("UPDATE audit_events SET detail = :d WHERE id = :mid", "mid", "edited"),
    ("UPDATE audit_events SET actor = 'mallory' WHERE id = :mid", "mid", "edited"),
    ("DELETE FROM audit_events WHERE id = :mid", "after", "broken link"),
    ("DELETE FROM audit_events WHERE id = :last", "head", "newest events were deleted"),
    ("INSERT INTO audit_events (at, actor, action, domain, subject, detail) "
     "VALUES ('2026-01-01 00:00:00', 'mallory', 'promoted', 'security', 'model:v9', '{}')", "new", "not sealed"),
])
def test_a_tampered_ledger_is_named_and_the_cli_fails(project: Path, tamper: str, named: str, problem: str) -> None:
    _append(4)
    ids = [r[0] for r in catalog_sql(project, "SELECT id FROM audit_events ORDER BY id")]
    mid, last = ids[1], ids[-1]
    catalog_sql(project, tamper, **{k: v for k, v in {"mid": mid, "last": last, "d": '{"accuracy": 0.99}'}.items()
                                    if f":{k}" in tamper})
    verdict = _verify()
    expect = {"mid": mid, "after": ids[2], "head": last, "new": None}[named]
    assert not verdict["ok"]
    assert any(problem in p["problem"] and (expect is None or p["id"] == expect) for p in verdict["problems"]), verdict
    done = run_mmops(project, "audit", "verify")
    assert done.returncode == 1 and "TAMPERED" in done.stdout and problem in done.stdout, done.stdout + done.stderr


def test_concurrent_writers_queue_on_the_head_and_never_fork_the_chain(project: Path) -> None:
    get_engine()  # migrated once, before the threads
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda d: _append(8, d), ["security", "industrial", "medical", "cardiac"]))
    verdict = _verify()
    assert verdict["ok"] and verdict["events"] == 32, verdict


def test_events_written_before_the_ledger_are_sealed_by_its_migration(project: Path) -> None:
    from alembic import command
    from alembic.config import Config

    from mmops.catalog import MIGRATIONS

    engine = get_engine()
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    command.downgrade(cfg, "0005")
    for i in range(3):
        catalog_sql(project, "INSERT INTO audit_events (at, actor, action, domain, subject, detail) VALUES "
                             "(:at, 'bob', 'ingested', 'security', :s, :d)",
                    at=f"2026-11-0{i + 1} 10:00:00.123456", s=f"landing:{i} files", d=json.dumps({"n": i}))
    command.upgrade(cfg, "head")
    verdict = _verify()
    assert verdict["ok"] and verdict["events"] == 3, verdict
    _append(1)  # and the chain goes on from them
    assert _verify()["ok"] and _verify()["events"] == 4
