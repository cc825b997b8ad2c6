from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from mmops.catalog import Base, ModelVersion, TrainingRun, get_engine, session_scope
from mmops.registry import get_alias, register
from tests.conftest import catalog_backend

pytestmark = pytest.mark.catalog  # the PostgreSQL pass runs these too (conftest)


def test_migrations_create_exactly_the_orm_schema(project: Path) -> None:
    engine = get_engine()
    assert engine.dialect.name == catalog_backend()  # `pytest --catalog postgresql` really runs on PostgreSQL
    tables = set(inspect(engine).get_table_names())
    assert {"samples", "files", "labels", "validation_runs", "dataset_versions", "training_runs",
            "model_versions", "model_aliases", "drift_reports", "alembic_version"} <= tables
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models and migrations disagree; add an Alembic revision: {diff}"


def _run(session, sha: str) -> TrainingRun:
    from mmops.catalog import DatasetVersion

    if session.get(DatasetVersion, "ds") is None:
        session.add(DatasetVersion(id="ds", domain="security", manifest_path="m", n_samples=1))
    run = TrainingRun(domain="security", dataset_version_id="ds", params={}, params_hash="p", device="cpu",
                      status="finished", checkpoint_sha256=sha)
    session.add(run)
    session.flush()
    return run


def test_champion_challenger_promotion(project: Path) -> None:
    with session_scope() as s:
        first = register(s, _run(s, "a"), {"macro_f1": 0.80})
        assert first.promoted and first.version == 1
        worse = register(s, _run(s, "b"), {"macro_f1": 0.70})
        assert not worse.promoted
        assert get_alias(s, "security", "champion").version == 1
        assert get_alias(s, "security", "challenger").version == 2
        better = register(s, _run(s, "c"), {"macro_f1": 0.90}, margin=0.05)
        assert better.promoted and get_alias(s, "security", "champion").version == 3
        again = register(s, _run(s, "c"), {"macro_f1": 0.90})  # same checkpoint: same version
        assert again.version == 3 and s.query(ModelVersion).count() == 3


def test_promotion_uses_the_same_holdout_and_is_audited(project: Path) -> None:
    from mmops.registry import describe, promote

    with session_scope() as s:
        register(s, _run(s, "a"), {"macro_f1": 0.95}, holdout="ds-old")
        # stored 0.95 came from an easier holdout; re-scored on this one the champion only reaches 0.70
        r = register(s, _run(s, "b"), {"macro_f1": 0.80}, margin=0.05, champion_metrics={"macro_f1": 0.70},
                     holdout="ds-new")
        assert r.promoted and "both on the test split of ds-new" in r.reason
        r = register(s, _run(s, "c"), {"macro_f1": 0.83}, margin=0.05, champion_metrics={"macro_f1": 0.80},
                     holdout="ds-new")
        assert not r.promoted  # better, but not by the margin
        promote(s, "security", 1, actor="alice", reason="rollback: v2 misbehaves at site B")
        assert get_alias(s, "security", "champion").version == 1
        log = describe(s, "security")["audit_log"]
    assert [e["action"] for e in log] == ["manual", "rejected", "promoted", "promoted"]
    assert log[0]["actor"] == "alice" and log[0]["previous_champion"] == 2
    assert log[1]["challenger"] == 0.83 and log[1]["champion"] == 0.80 and log[1]["margin"] == 0.05
