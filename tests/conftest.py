"""Shared fixtures: throw-away mmops projects built from the bundled real data, fast settings for training.

`pytest --catalog postgresql` runs the same tests with every project's catalog in a PostgreSQL database of
its own (tests/postgres.py); the default is the embedded SQLite catalog. `make test` runs the whole suite on
SQLite, then the tests marked `catalog` on PostgreSQL: every test that queries the catalog itself (marked
here, from its source) and the modules whose subject is the catalog (marked in the module).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.postgres import PostgresServer
from tests.postgres import free_port as free_port  # re-exported for the tests

REPO = Path(__file__).resolve().parents[1]

# BentoML and Great Expectations read these at import: set them before anything imports those libraries.
_SESSION_TMP = Path(os.environ.get("MMOPS_TEST_TMP", "/tmp")) / f"mmops-tests-{os.getpid()}"
os.environ["BENTOML_HOME"] = str(_SESSION_TMP / "bentoml")
os.environ["BENTOML_DO_NOT_TRACK"] = "true"
os.environ["GX_ANALYTICS_ENABLED"] = "false"
os.environ.pop("MMOPS_DATABASE_URL", None)
os.environ.pop("MMOPS_MODEL_TAG", None)
# Every process a test starts inherits this mark, so that one left behind can be found (leftover_processes).
os.environ["MMOPS_TEST_SESSION"] = str(os.getpid())
# DVC detaches daemons of its own (analytics, its update check) that outlive the command; none in tests
os.environ["DVC_NO_ANALYTICS"] = "1"
os.environ["DVC_DAEMON"] = "1"  # dvc.daemon: "skipping launching a new daemon"
# Under `pytest -n N` (pytest-xdist) N workers share the machine's cores: each trains, serves and runs its
# subprocesses on its share of them, as many threads as cores / N. Oversubscribed OpenMP threads spin
# against each other and make everything several times slower.
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(max(1, (os.cpu_count() or 1) // workers)))

FAST_TRAIN = {"epochs": 6, "batch_size": 32, "lr": 0.003, "patience": 6}
# A guard against a hang, not a speed limit: the longest any one step may take before it is called stuck
# (pyproject's pytest timeout is the same). The slowest test takes ~5 min on an idle 2-core machine; load
# alone (the suite beside another job) must never reach this. How long tests should take is their budget
# (tests/budgets.json), reported at the end of every run.
HANG_S = 2700
BUDGETS = REPO / "tests" / "budgets.json"
_DURATIONS: dict[str, float] = {}
_POSTGRES: list[PostgresServer] = []  # the session's server under --catalog postgresql


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--catalog", choices=("sqlite", "postgresql"), default="sqlite",
                     help="where test projects keep their catalog (postgresql: tests/postgres.py)")


def _is_worker(config: pytest.Config) -> bool:
    """A pytest-xdist worker (`pytest -n N`), not the session that runs them or a plain session."""
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--catalog") == "postgresql":
        server = PostgresServer.start()
        _POSTGRES.append(server)
        if not _is_worker(config):  # workers (started after this) share the server, as one of the user's
            os.environ["MMOPS_TEST_POSTGRES_URL"] = server.admin_url.render_as_string(hide_password=False)


# A test whose own code queries the catalog is a catalog test, whatever its module says.
_CATALOG_CALLS = ("catalog_sql(", "session_scope(")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks the catalog tests, and puts the longest modules first (their budgets added up), so that
    `make test`'s workers, which take one module at a time, do not end on one long module while the other
    waits (the Makefile keeps this order: --no-loadscope-reorder)."""
    import inspect
    import json

    for item in items:
        function = getattr(item, "function", None)
        if function is not None and any(call in inspect.getsource(function) for call in _CATALOG_CALLS):
            item.add_marker(pytest.mark.catalog)
    budgets = json.loads(BUDGETS.read_text()) if BUDGETS.is_file() else {}
    module_s: dict[str, float] = {}
    for name, seconds in budgets.items():
        module_s[name.split("::")[0]] = module_s.get(name.split("::")[0], 0.0) + seconds
    items.sort(key=lambda item: -module_s.get(item.nodeid.split("::")[0], 0.0))  # stable: ties keep their order


def pytest_unconfigure(config: pytest.Config) -> None:
    while _POSTGRES:
        _POSTGRES.pop().stop()


def catalog_backend() -> str:
    return "postgresql" if _POSTGRES else "sqlite"


def catalog_url(root: Path) -> str:
    """The catalog of a test project (its `.env` names a PostgreSQL database under --catalog postgresql)."""
    from mmops.config import get_settings

    old = os.environ.get("MMOPS_HOME")
    os.environ["MMOPS_HOME"] = str(root)
    try:
        return get_settings().catalog_url
    finally:
        if old is None:
            os.environ.pop("MMOPS_HOME", None)
        else:
            os.environ["MMOPS_HOME"] = old


def catalog_sql(root: Path, sql: str, **params: object) -> list[tuple]:
    """One statement (`:name` parameters) on a test project's catalog, whichever database holds it, in a
    transaction of its own; its rows, if it returns any."""
    from sqlalchemy import create_engine, text

    engine = create_engine(catalog_url(root))
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def make_project(root: Path, packs: dict[str, str], train: dict | None = None, with_code: bool = False) -> Path:
    """A project folder like the repository's top level: params.yaml, bentofile.yaml (and mmops/, dags/)."""
    root.mkdir(parents=True, exist_ok=True)
    if _POSTGRES:
        import hashlib

        name = "mmops_" + hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
        (root / ".env").write_text(f"MMOPS_DATABASE_URL={_POSTGRES[0].create_database(name)}\n")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["packs"] = packs
    params["train"].update(train or FAST_TRAIN)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(REPO / "bentofile.yaml", root / "bentofile.yaml")
    if with_code:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for name in ("mmops", "dags", "expectations", "domains"):
            shutil.copytree(REPO / name, root / name, ignore=ignore, dirs_exist_ok=True)
        shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    return root


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project with MMOPS_HOME pointing at it."""
    root = make_project(tmp_path / "proj", {"security": "security-faces", "industrial": "industrial-imu"})
    monkeypatch.setenv("MMOPS_HOME", str(root))
    return root


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """security and industrial taken through every stage up to a packaged model (built once per session)."""
    from mmops import pipeline

    root = make_project(tmp_path_factory.mktemp("trained") / "proj",
                        {"security": "security-faces", "industrial": "industrial-imu"}, with_code=True)
    old = os.environ.get("MMOPS_HOME")
    os.environ["MMOPS_HOME"] = str(root)
    try:
        for domain in ("security", "industrial"):
            pipeline.pull_domain(domain)
            for stage in ("ingest", "label", "validate", "build", "train", "evaluate", "package"):
                pipeline.STAGES[stage](domain)
        yield root
    finally:
        if old is None:
            os.environ.pop("MMOPS_HOME", None)
        else:
            os.environ["MMOPS_HOME"] = old


@pytest.fixture
def use_project(trained_project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MMOPS_HOME", str(trained_project))
    return trained_project


def mmops_env(root: Path, fault: str | None = None, **extra: str) -> dict[str, str]:
    """The environment a test runs `mmops` in for a project: a fixed pseudonym key, and MMOPS_FAULT only
    when `fault` asks for one (mmops.faults)."""
    env = {**os.environ, "MMOPS_HOME": str(root), "MMOPS_PSEUDONYM_KEY": "test-key", **extra}
    env.pop("MMOPS_FAULT", None)
    if fault:
        env["MMOPS_FAULT"] = fault
    return env


def run_mmops(root: Path, *args: str, fault: str | None = None, timeout: float = HANG_S,
              **extra: str) -> subprocess.CompletedProcess:
    """`mmops <args>` in a project, as a user runs it (a process of its own)."""
    return subprocess.run([venv_bin("mmops"), *args], cwd=root, env=mmops_env(root, fault, **extra),
                          capture_output=True, text=True, timeout=timeout)


def venv_bin(name: str) -> str:
    """A console script of the running interpreter's environment."""
    return str(Path(sys.executable).parent / name)


def leftover_processes() -> list[tuple[int, str]]:
    """Processes that this test session started (they carry its mark) and that outlived their parent:
    orphans, adopted by init. A module's server fixture is a child of this process, not an orphan."""
    import psutil

    mark = str(os.getpid())
    found = []
    for proc in psutil.process_iter(["pid", "ppid", "cmdline"]):
        try:
            if proc.info["ppid"] != 1 or proc.environ().get("MMOPS_TEST_SESSION") != mark:
                continue
        except psutil.Error:
            continue
        found.append((proc.pid, " ".join(proc.info["cmdline"] or [])[:160]))
    return found


@pytest.fixture(autouse=True)
def _no_orphans(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test, kill whatever it left running as orphans (a server that outlived its stop) and fail
    the test: a leak that load or a failure exposes must not eat the memory of every test after it."""
    yield
    left = leftover_processes()
    if left:
        import signal

        for pid, _ in left:
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        pytest.fail(f"{request.node.nodeid} left {len(left)} processes running (killed now): {left[:5]}")


@pytest.fixture(autouse=True)
def _torch_threads_kept(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test (or the code under it) that leaves torch on another thread count changes every later training
    in the worker: a CPU checkpoint depends on it (tests compare checkpoints). Put it back and fail the test."""
    import torch

    before = torch.get_num_threads()
    yield
    after = torch.get_num_threads()
    if after != before:
        torch.set_num_threads(before)
        pytest.fail(f"{request.node.nodeid} left torch on {after} threads (it had {before}; put back now)")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _DURATIONS[report.nodeid] = _DURATIONS.get(report.nodeid, 0.0) + report.duration  # setup + call + teardown


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Each test's time against its budget (tests/budgets.json: seconds measured by `make test` on the 2-core
    reference machine, two workers on one core each, for tests of over 20 s): over 1.5x is named, as is a
    slow test that has no budget. A report,
    not a failure (the machine's load is not the code's fault); MMOPS_TEST_BUDGETS=record rewrites the
    budgets from this run. The times also go to var/test-durations.json."""
    import json

    if not _DURATIONS or _is_worker(terminalreporter.config):
        return
    budgets = json.loads(BUDGETS.read_text()) if BUDGETS.is_file() else {}
    over = [(n, t, budgets[n]) for n, t in _DURATIONS.items() if n in budgets and t > 1.5 * budgets[n]]
    unbudgeted = [(n, t) for n, t in _DURATIONS.items() if n not in budgets and t > 20]
    write = terminalreporter.write_line
    write(f"test time: {sum(_DURATIONS.values()) / 60:.1f} min in {len(_DURATIONS)} tests; "
          f"{len(over)} over 1.5x their budget, {len(unbudgeted)} slow ones without a budget ({BUDGETS.name})")
    for name, took, budget in sorted(over, key=lambda x: -x[1]):
        write(f"  over budget: {name} {took:.0f} s (budget {budget:.0f} s)")
    for name, took in sorted(unbudgeted, key=lambda x: -x[1]):
        write(f"  no budget: {name} {took:.0f} s")
    out = REPO / "var" / "test-durations.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(sorted(_DURATIONS.items())), indent=1))
    if os.environ.get("MMOPS_TEST_BUDGETS") == "record":
        keep = {**budgets, **{n: round(t, 1) for n, t in _DURATIONS.items() if t > 20}}
        BUDGETS.write_text(json.dumps(dict(sorted(keep.items())), indent=1) + "\n")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_SESSION_TMP, ignore_errors=True)
