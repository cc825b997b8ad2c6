"""kill -9 in the middle of an ingest, then a rerun: the catalog, data/ and quarantine/ end up exactly as one
clean run leaves them."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import HANG_S, catalog_backend, catalog_sql, make_project, mmops_env, run_mmops, venv_bin

pytestmark = pytest.mark.catalog  # the PostgreSQL pass runs these too (conftest)


def _project(root: Path) -> Path:
    make_project(root, {"security": "security-faces"})
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["ingest"] = {"batch_files": 40, "workers": 2}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def _mmops(root: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    return run_mmops(root, *args, fault=fault, timeout=HANG_S)


def _land(root: Path, source: Path) -> None:
    shutil.copytree(source, root / "landing", symlinks=True)


def _state(root: Path) -> dict:
    """Everything an ingest leaves behind, minus timestamps."""
    samples = dict(catalog_sql(root, "select id, sample_key from samples"))
    files = catalog_sql(root, "select id, sample_id, modality, source_path, sha256, content_sha256, size_bytes, "
                              "blob_path, status, reason, duplicate_of, stats from files order by id")
    paths = {f[0]: f[3] for f in files}
    # JSON columns: text on SQLite, decoded by the driver on PostgreSQL
    rows = sorted(json.dumps([samples.get(f[1]), *f[2:10], paths.get(f[10]),
                              f[11] if isinstance(f[11], dict) else json.loads(f[11])]) for f in files)

    def tree(d: Path) -> list[str]:
        return sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()) if d.exists() else []

    state = {"samples": sorted(samples.values()), "files": rows, "data": tree(root / "data"),
             "quarantine": tree(root / "quarantine"), "n_files": len(files)}
    if catalog_backend() == "sqlite":  # no row was written and taken back (PostgreSQL's sequences skip the ids
        state["max_id"] = max(paths, default=0)  # of a killed transaction: gaps are no loss there)
    return state


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The security pack plus bad files, landed once and copied into each project."""
    root = _project(tmp_path_factory.mktemp("landed") / "proj")
    assert _mmops(root, "data", "pull", "--domain", "security").returncode == 0
    cam = root / "landing" / "security" / "camera"
    for i, good in enumerate(sorted(cam.iterdir())[:5]):
        (cam / f"bad{i}.png").write_bytes(good.read_bytes()[: 40 + i])  # truncated
        (cam / f"copy{i}.png").write_bytes(good.read_bytes())  # same content, another record
    return root / "landing"


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["ingest.before_commit:3", "ingest.after_write:57"])
def test_kill_9_mid_ingest_then_rerun_equals_one_clean_run(landed: Path, tmp_path: Path, fault: str) -> None:
    clean = _project(tmp_path / "clean")
    _land(clean, landed)
    assert _mmops(clean, "ingest", "-d", "security").returncode == 0
    expected = _state(clean)
    assert expected["n_files"] == 210 and len(expected["quarantine"]) == 5

    crashed = _project(tmp_path / "crashed")
    _land(crashed, landed)
    killed = _mmops(crashed, "ingest", "-d", "security", fault=fault)
    assert killed.returncode == -9, killed.stderr  # SIGKILL: no cleanup handler ran
    partial = _state(crashed)
    assert 0 < partial["n_files"] < expected["n_files"]  # it died mid-way, with batches committed
    assert partial["n_files"] % 40 == 0  # ... and only whole batches

    rerun = _mmops(crashed, "ingest", "-d", "security", "--json")
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["skipped"] == partial["n_files"]
    assert summary["ingested"] + summary["quarantined"] == expected["n_files"] - partial["n_files"]
    assert _state(crashed) == expected
    assert _mmops(crashed, "ingest", "-d", "security").returncode == 0
    assert _state(crashed) == expected  # and once more: nothing changes


@pytest.mark.slow
@pytest.mark.parametrize("landing", ["one folder", "overlapping folders"])
def test_two_ingests_of_one_domain_at_once_equal_one_clean_run(landed: Path, tmp_path: Path, landing: str) -> None:
    """An hourly DAG run overlapping a manual `mmops ingest`, of the same landing folder or of two folders
    that share a third of their files (two sites' drops, or a re-sent batch): the domain's writer lock keeps
    them consistent, and between them every file lands once."""
    clean = _project(tmp_path / "clean")
    _land(clean, landed)
    assert _mmops(clean, "ingest", "-d", "security").returncode == 0
    expected = _state(clean)

    busy = _project(tmp_path / "busy")
    _land(busy, landed)
    env = mmops_env(busy)
    envs = [env, env]
    if landing == "overlapping folders":  # the first two thirds of the files in one, the last two thirds in the other
        files = sorted(p for p in (busy / "landing").rglob("*") if p.is_file() or p.is_symlink())
        third = len(files) // 3
        for i, keep in enumerate((files[: 2 * third], files[third:])):
            site = tmp_path / f"site{i}"
            for f in keep:
                (site / f.relative_to(busy / "landing")).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, site / f.relative_to(busy / "landing"), follow_symlinks=False)
            envs[i] = {**env, "MMOPS_LANDING_URL": str(site)}
    procs = [subprocess.Popen([venv_bin("mmops"), "ingest", "-d", "security", "--json"], cwd=busy, env=e,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for e in envs]
    results = [p.communicate(timeout=HANG_S) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-2000:] for r in results]
    summaries = [json.loads(r[0]) for r in results]
    # between them every file was handled once; whatever one did, the other skipped
    assert sum(s["ingested"] + s["quarantined"] for s in summaries) == expected["n_files"]
    assert _state(busy) == expected
