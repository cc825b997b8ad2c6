"""Shared fixtures: throw-away mmops projects built from the bundled real data, fast settings for training."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# BentoML and Great Expectations read these at import: set them before anything imports those libraries.
_SESSION_TMP = Path(os.environ.get("MMOPS_TEST_TMP", "/tmp")) / f"mmops-tests-{os.getpid()}"
os.environ["BENTOML_HOME"] = str(_SESSION_TMP / "bentoml")
os.environ["BENTOML_DO_NOT_TRACK"] = "true"
os.environ["GX_ANALYTICS_ENABLED"] = "false"
os.environ.pop("MMOPS_DATABASE_URL", None)
os.environ.pop("MMOPS_MODEL_TAG", None)

FAST_TRAIN = {"epochs": 6, "batch_size": 32, "lr": 0.003, "patience": 6}


def make_project(root: Path, packs: dict[str, str], train: dict | None = None, with_code: bool = False) -> Path:
    """A project folder like the repository's top level: params.yaml, bentofile.yaml (and mmops/, dags/)."""
    root.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["packs"] = packs
    params["train"].update(train or FAST_TRAIN)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(REPO / "bentofile.yaml", root / "bentofile.yaml")
    if with_code:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for name in ("mmops", "dags", "expectations"):
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def venv_bin(name: str) -> str:
    """A console script of the running interpreter's environment."""
    return str(Path(sys.executable).parent / name)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_SESSION_TMP, ignore_errors=True)
