"""Paths that come from data never reach outside the project: blob references in manifests and the catalog,
the landing area's control files (labels, ground truth, Label Studio exports), and hostile exports. No
pickle of untrusted origin is loaded anywhere in the code."""

import ast
import json
import os
import subprocess
from pathlib import Path

import pytest

from mmops import pipeline
from mmops.blobs import read_blob
from mmops.catalog import Sample, SampleFile, session_scope
from mmops.datasets.tensors import load_split
from mmops.domains import load_domain
from mmops.errors import BadInputError
from tests.conftest import REPO, venv_bin


@pytest.fixture
def ingested(project: Path) -> Path:
    pipeline.pull_domain("security")
    pipeline.ingest("security")
    return project


def _a_blob(root: Path) -> str:
    with session_scope() as s:
        return s.query(SampleFile.blob_path).filter(SampleFile.status == "ok").first()[0]


@pytest.mark.parametrize("ref", ["../../../etc/passwd", "/etc/passwd", "raw/security/camera/ab/../../../../x",
                                 "raw/security/camera/zz/" + "0" * 64 + ".png", "raw/Security/camera/00/" + "0" * 64,
                                 "raw/security/camera/00/" + "0" * 64 + ".png\n", 7])
def test_a_blob_reference_outside_the_store_layout_is_refused(ingested: Path, ref: object) -> None:
    with pytest.raises(BadInputError, match="not a blob of the data store"):
        read_blob(ingested / "data", ref)  # type: ignore[arg-type]


def test_a_tampered_manifest_row_reads_nothing_outside_data(ingested: Path) -> None:
    """A manifest that travels (dvc pull, a shared artifact) names its blobs; one edited to point at a file
    outside data/ is refused, not read."""
    secret = ingested / "secret.png"
    secret.write_bytes((ingested / "data" / _a_blob(ingested)).read_bytes())
    pack = load_domain("security")
    good = {"files": {"camera": {"blob": _a_blob(ingested)}}}
    assert len(load_split(pack, ingested / "data", [good])) == 1
    with pytest.raises(BadInputError):
        load_split(pack, ingested / "data", [{"files": {"camera": {"blob": "../secret.png"}}}])


def test_symlinks_planted_in_the_store_are_refused(ingested: Path, tmp_path: Path) -> None:
    data = ingested / "data"
    ref = _a_blob(ingested)
    outside = tmp_path / "outside.png"
    outside.write_bytes((data / ref).read_bytes())
    # the blob itself swapped for a symlink
    (data / ref).unlink()
    (data / ref).symlink_to(outside)
    with pytest.raises(BadInputError, match="symlink"):
        read_blob(data, ref)
    # a folder on the way swapped for a symlink to a copy elsewhere
    (data / ref).unlink()
    shard = (data / ref).parent
    elsewhere = tmp_path / "shard"
    shard.rename(elsewhere)
    (elsewhere / Path(ref).name).write_bytes(outside.read_bytes())
    shard.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(BadInputError, match="outside"):
        read_blob(data, ref)


def test_control_files_that_are_symlinks_out_of_landing_are_refused(project: Path, tmp_path: Path) -> None:
    pipeline.pull_domain("security")
    pipeline.ingest("security")
    landing = project / "landing" / "security"
    stolen = tmp_path / "someone-elses-labels.csv"
    stolen.write_text((landing / "labels.csv").read_text())
    (landing / "labels.csv").unlink()
    (landing / "labels.csv").symlink_to(stolen)
    with pytest.raises(BadInputError, match="symbolic link"):
        pipeline.label("security")
    (landing / "labels.csv").unlink()
    (landing / "labels.csv").write_text(stolen.read_text())
    # a folder of ground truth that is a symlink to elsewhere: its files are outside the landing area
    truth = tmp_path / "truth"
    truth.mkdir()
    (truth / "late.csv").write_text("sample_id,label\nlfw000,face\n")
    (landing / "ground_truth").symlink_to(truth, target_is_directory=True)
    with pytest.raises(BadInputError, match="escapes the landing folder"):
        pipeline.label("security")
    # the CLI says so in one line, without a traceback
    proc = subprocess.run([venv_bin("mmops"), "label", "--domain", "security"], cwd=project, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "MMOPS_HOME": str(project)})
    assert proc.returncode == 1 and "escapes the landing folder" in proc.stderr
    assert "Traceback" not in proc.stderr
    (landing / "ground_truth").unlink()
    assert pipeline.label("security").labeled == 200


def test_a_hostile_label_studio_export_imports_the_good_task_and_rejects_the_rest(ingested: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch
                                                                                   ) -> None:
    with session_scope() as s:
        key = s.query(Sample.sample_key).filter(Sample.domain == "security").order_by(Sample.sample_key).first()[0]
    good = {"id": 1, "data": {"sample_key": key}, "annotations": [{
        "id": 5, "completed_by": {"email": "a" * 500}, "result": [
            {"from_name": "label", "value": {"choices": ["face"]}}]}]}
    hostile = [
        good, "not a task", 42, None, {"id": {"nested": 1}, "data": ["list"]},
        {"id": 3, "data": {"sample_key": ["a", "list"]}},
        {"id": 4, "data": {"sample_key": key}, "annotations": "a string"},
        {"id": 6, "data": {"sample_key": key}, "annotations": [None, 7, {"result": "x"},
                                                              {"result": [None, {"from_name": "label", "value": 3}]},
                                                              {"result": [{"from_name": "label",
                                                                           "value": {"choices": "face"}}]},
                                                              {"result": [{"from_name": "label",
                                                                           "value": {"choices": [{"x": 1}]}}]}]},
    ]
    export = ingested / "export.json"
    export.write_text(json.dumps(hostile))
    summary = pipeline.import_annotations("security", str(export))
    assert summary["imported"] == 1 and summary["tasks"] == len(hostile)
    assert len(summary["rejected"]) >= 5  # each bad task or annotation with its reason
    with session_scope() as s:
        from mmops.catalog import Label

        [(annotator,)] = s.query(Label.annotator).filter(Label.kind == "human").all()
    assert annotator == "a" * 128  # bounded, whatever the export claims

    deep = ingested / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BadInputError, match="not a Label Studio JSON export"):
        pipeline.import_annotations("security", str(deep))
    monkeypatch.setattr("mmops.labeling.files.MAX_LABEL_FILE_BYTES", 100)
    with pytest.raises(BadInputError, match="over 100 bytes"):
        pipeline.import_annotations("security", str(export))


UNSAFE_LOADS = {("pickle", "load"), ("pickle", "loads"), ("joblib", "load"), ("dill", "load"), ("cloudpickle", "load"),
                ("yaml", "load"), ("yaml", "unsafe_load"), ("marshal", "loads"), ("shelve", "open")}


def test_no_pickle_of_untrusted_origin_is_loaded_anywhere() -> None:
    """Weights are safetensors; torch.load only with weights_only=True; numpy without allow_pickle."""
    found = []
    for path in [*(REPO / "mmops").rglob("*.py"), *(REPO / "dags").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
            kwargs = {k.arg: k.value for k in node.keywords}
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if (owner, node.func.attr) in UNSAFE_LOADS:
                found.append(f"{where} {owner}.{node.func.attr}")
            if (owner, node.func.attr) == ("torch", "load") and not (
                    isinstance(kwargs.get("weights_only"), ast.Constant) and kwargs["weights_only"].value is True):
                found.append(f"{where} torch.load without weights_only=True")
            if node.func.attr == "load" and owner in ("np", "numpy") and "allow_pickle" in kwargs:
                found.append(f"{where} np.load(allow_pickle=...)")
    assert found == []
