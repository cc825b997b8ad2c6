import subprocess
import sys
from pathlib import Path

from tests.conftest import venv_bin


def test_help_lists_every_stage() -> None:
    out = subprocess.run([venv_bin("mmops"), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for stage in ("ingest", "label", "prelabel", "queue", "annotations", "validate", "build", "train", "evaluate",
                  "package", "monitor", "serve", "demo", "pretrain", "registry", "promote", "results"):
        assert stage in out.stdout


def test_heavy_libraries_are_not_imported_by_the_cli() -> None:
    code = ("import sys, mmops.cli; heavy = [m for m in ('torch', 'great_expectations', 'evidently', 'airflow', "
            "'bentoml', 'sqlalchemy') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_user_errors_are_one_line_and_non_zero(project: Path) -> None:
    out = subprocess.run([venv_bin("mmops"), "ingest", "--domain", "security"], capture_output=True, text=True,
                         timeout=120, cwd=project)
    assert out.returncode == 1
    assert "no landing folder" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([venv_bin("mmops"), "data", "pull", "no-such-pack"], capture_output=True, text=True,
                         timeout=120, cwd=project)
    assert out.returncode == 1 and "unknown data pack" in out.stderr
