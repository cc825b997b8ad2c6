import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmops.processes import stop_group
from tests.conftest import venv_bin
from tests.images import encoded


def test_help_lists_every_stage() -> None:
    out = subprocess.run([venv_bin("mmops"), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for stage in ("ingest", "label", "prelabel", "queue", "annotations", "validate", "build", "train", "evaluate",
                  "package", "monitor", "serve", "demo", "pretrain", "registry", "promote", "rollback", "audit", "results"):
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


# A user's mistakes, each on a project with nothing in it yet: one line on stderr naming what to do, a non-zero
# exit, never a traceback (and never a server left starting with nothing to serve).
MISTAKES = [
    ("ingest --domain nope", "unknown domain 'nope'"),
    ("label --domain security", "no labels for security"),
    ("validate --domain security", "no labeled records"),
    ("build --domain security", "run `mmops validate"),
    ("train --domain security", "run `mmops build"),
    ("evaluate --domain security", "run `mmops build"),
    ("package --domain security", "no trained model"),
    ("monitor --domain security", "run `mmops build"),
    ("status --domain nope", "unknown domain 'nope'"),
    ("reload --domain security", "no packaged champion"),
    ("serve --domain nope", "unknown domain 'nope'"),
    ("serve --domain security", "no packaged model"),
    ("predict --domain security camera=missing.png", "missing.png: no such file"),
    ("predict --domain security camera=params.yaml", "params.yaml"),
    ("predict --domain security --url http://127.0.0.1:9 camera=face.png", "cannot reach the service"),
    ("predict --domain security nowhere", "neither MODALITY=FILE"),
    ("domain show nope", "unknown domain 'nope'"),
    ("domain add nope", "unknown domain 'nope'"),
    ("domain add security --pack industrial-imu", "is for domain industrial"),
    ("data pull --domain nope", "unknown domain 'nope'"),
    ("annotations --domain security missing.json", "missing.json"),
    ("run --domain nope", "unknown domain 'nope'"),
]


@pytest.mark.parametrize(("command", "message"), MISTAKES, ids=[c for c, _ in MISTAKES])
def test_every_user_mistake_is_one_line(project: Path, command: str, message: str) -> None:
    (project / "face.png").write_bytes(encoded(0, 25, 25))
    out = _mmops(project, command)
    assert out.returncode in (1, 2), (out.returncode, out.stdout[-500:], out.stderr[-2000:])
    assert "Traceback" not in out.stderr and message in out.stderr, out.stderr[-2000:]
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


@pytest.mark.parametrize("broken", ["train: {epochs: 0}\n", "packs: [medical\n", "trian: {epochs: 3}\n"])
def test_a_broken_params_file_is_one_line_for_every_command(project: Path, broken: str) -> None:
    (project / "params.yaml").write_text(broken)
    for command in ("status", "run", "data pull", "domain list", "serve --domain security", "ingest --domain security"):
        out = _mmops(project, command)
        assert out.returncode == 1 and "Traceback" not in out.stderr, (command, out.stderr[-2000:])
        assert "params.yaml" in out.stderr and len(out.stderr.strip().splitlines()) == 1, (command, out.stderr)


def _mmops(project: Path, command: str) -> subprocess.CompletedProcess:
    """`mmops <command>` in the project, with the project's own (empty) BentoML store rather than the test
    session's, which other tests fill with packaged models; in a process group of its own, killed whole if
    it outlives the timeout (a server started by mistake must not stay behind)."""
    env = {**os.environ, "BENTOML_HOME": str(project / "var" / "bentoml")}
    proc = subprocess.Popen([venv_bin("mmops"), *command.split()], cwd=project, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        stop_group(proc)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{command} still ran after 120 s: {stderr[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
