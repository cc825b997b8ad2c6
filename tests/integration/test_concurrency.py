"""Two training runs at once leave the catalog and the artifacts consistent, on SQLite and PostgreSQL:

- in one project (a DAG run beside a CLI call), the second run waits for the first instead of writing into
  the same model folder, and both are recorded;
- in two project folders sharing one catalog (two machines), two evaluations register their challengers at
  the same moment: the registry's lock hands out distinct version numbers and keeps one champion. A stall
  injected between reading the last version number and inserting the next one holds the race window open.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import (
    HANG_S,
    catalog_backend,
    catalog_sql,
    catalog_url,
    make_project,
    mmops_env,
    run_mmops,
    venv_bin,
)

pytestmark = [pytest.mark.slow, pytest.mark.catalog]

TRAIN = {"epochs": 3, "batch_size": 16, "patience": 3}


def _at_once(*runs: tuple[Path, tuple[str, ...], str | None]) -> list[tuple[int, str, str]]:
    """Start every (project, mmops args, fault) together; (exit code, stdout, stderr) of each."""
    procs = [subprocess.Popen([venv_bin("mmops"), *args], cwd=root, env=mmops_env(root, fault, OMP_NUM_THREADS="1"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for root, args, fault in runs]
    outs = [p.communicate(timeout=HANG_S) for p in procs]
    return [(p.returncode, o, e) for p, (o, e) in zip(procs, outs, strict=True)]


def _json(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{"):])


def test_two_training_runs_at_once_stay_consistent(tmp_path: Path) -> None:
    one = make_project(tmp_path / "one", {"industrial": "industrial-imu"}, TRAIN)
    for stage in (("data", "pull"), ("ingest",), ("label",), ("validate",), ("build",)):
        proc = run_mmops(one, *stage, "--domain", "industrial", OMP_NUM_THREADS="1")
        assert proc.returncode == 0, proc.stdout + proc.stderr

    # 1. one project, two trainings at once: the second waits, saying so; both finish and are recorded
    train = ("train", "--domain", "industrial", "--json")
    runs = _at_once((one, train, None), (one, train, None))
    assert [rc for rc, _, _ in runs] == [0, 0], [err[-2000:] for _, _, err in runs]
    assert sum("waiting for another build, train, evaluate or package of industrial" in err
               for _, _, err in runs) == 1
    shas = {_json(out)["checkpoint_sha256"] for _, out, _ in runs}
    assert len(shas) == 1  # the same data and seed: the same weights, neither run's files torn by the other
    card = json.loads((one / "artifacts" / "industrial" / "model" / "model_card.json").read_text())
    assert {card["checkpoint_sha256"]} == shas
    assert catalog_sql(one, "select status, checkpoint_sha256 from training_runs order by id") == \
        [("finished", card["checkpoint_sha256"])] * 2

    # 2. a second project folder on the same catalog (another machine with the same data), another seed
    two = tmp_path / "two"
    shutil.copytree(one, two, ignore=shutil.ignore_patterns("locks"))
    (two / ".env").write_text(f"MMOPS_DATABASE_URL={catalog_url(one)}\n")
    assert catalog_url(two) == catalog_url(one) and catalog_url(one).startswith(catalog_backend())
    params = yaml.safe_load((two / "params.yaml").read_text())
    params["seed"] = 7
    (two / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    retrained = run_mmops(two, *train, OMP_NUM_THREADS="1")
    assert retrained.returncode == 0, retrained.stderr[-2000:]
    assert _json(retrained.stdout)["checkpoint_sha256"] not in shas

    # both register at once, each stalled 3 s between reading the last version number and taking the next
    evaluate = ("evaluate", "--domain", "industrial", "--json")
    stall = "registry.next_version:1:sleep=3"
    runs = _at_once((one, evaluate, stall), (two, evaluate, stall))
    assert [rc for rc, _, _ in runs] == [0, 0], [err[-2000:] for _, _, err in runs]
    assert sorted(_json(out)["model_version"] for _, out, _ in runs) == [1, 2]
    versions = catalog_sql(one, "select version, checkpoint_sha256 from model_versions where domain='industrial' "
                                "order by version")
    assert [v for v, _ in versions] == [1, 2] and len({sha for _, sha in versions}) == 2
    assert len(catalog_sql(one, "select * from model_aliases where domain='industrial' and alias='champion'")) == 1
    events = catalog_sql(one, "select action, previous_champion_id from promotion_events order by id")
    assert len(events) == 2 and events[0] == ("promoted", None)  # the first found no champion; the second did
    assert events[1][1] is not None
