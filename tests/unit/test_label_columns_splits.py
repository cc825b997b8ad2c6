"""Labels files whatever their columns are called, and a data set's own split honoured by the build.

BasicMotions (the industrial pack) comes with its published split: 40 recordings for training (bm_train_*),
40 for testing (bm_test_*); a user who lands it with that split must get that test set back.
"""

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from mmops import pipeline
from mmops.catalog import Sample, SampleFile, session_scope
from mmops.datasets.build import build_manifest
from mmops.domains import LabelColumns
from mmops.errors import BadInputError, ValidationFailedError
from mmops.labeling.files import read_label_file
from mmops.records import Record
from tests.conftest import REPO

pytestmark = pytest.mark.catalog  # the PostgreSQL pass runs these too (conftest)


def _labels(project: Path) -> list[dict[str, str]]:
    with (project / "landing" / "industrial" / "labels.csv").open() as fh:
        return list(csv.DictReader(fh))


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])


def _published_split(key: str) -> str:
    return "test" if key.startswith("bm_test_") else "train"


def test_file_label_split_columns_are_read_and_the_build_keeps_the_test_set(project: Path) -> None:
    pipeline.pull_domain("industrial")
    rows = _labels(project)
    assert len(rows) == 80
    # the common layout: a file name (with its folder) per row, the class, the data set's split
    _write(project / "landing" / "industrial" / "labels.csv", ["file", "label", "split"],
           [[f"accel/{r['sample_id']}.csv", r["label"], _published_split(r["sample_id"])] for r in rows])
    pipeline.ingest("industrial")
    result = pipeline.label("industrial").files[0]
    assert result["imported"] == 80 and result["rejected"] == {}
    assert result["splits"] == {"train": 40, "test": 40}
    with session_scope() as s:
        assert {k: v for k, v in s.query(Sample.sample_key, Sample.split)} == {
            r["sample_id"]: _published_split(r["sample_id"]) for r in rows}
    assert pipeline.validate("industrial").success
    built = pipeline.build("industrial")
    # test is exactly the published test set; validation is carved from the published training set
    assert built.split_counts == {"train": 32, "val": 8, "test": 40}
    manifest = json.loads(Path(built.manifest).read_text())
    assert {r["key"] for r in manifest["records"] if r["split"] == "test"} == {
        r["sample_id"] for r in rows if r["sample_id"].startswith("bm_test_")}
    assert manifest["params"]["split"] == "predefined" and manifest["params"]["val_from_train"] is True
    val = [r["label"] for r in manifest["records"] if r["split"] == "val"]
    assert sorted(set(val)) == ["badminton", "running", "standing", "walking"]  # stratified
    assert pipeline.build("industrial").dataset_version == built.dataset_version  # reproducible


def test_id_and_class_headers_and_bare_file_names_work_too(project: Path) -> None:
    pipeline.pull_domain("industrial")
    rows = _labels(project)
    _write(project / "landing" / "industrial" / "labels.csv", ["id", "class"],
           [[f"{r['sample_id']}.csv", r["label"]] for r in rows])
    pipeline.ingest("industrial")
    result = pipeline.label("industrial").files[0]
    assert result["imported"] == 80 and result["splits"] == {}
    pipeline.validate("industrial")
    assert pipeline.build("industrial").split_counts == {"train": 48, "val": 16, "test": 16}  # ours


def test_a_pack_names_its_own_columns_and_an_unknown_header_says_what_it_expected(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    _write(path, ["recording", "activity", "partition"], [["r1", "walking", "test"]])
    with pytest.raises(BadInputError, match=r"no record id column; expected one of \['sample_id', 'id'"):
        read_label_file(path)
    rows = read_label_file(path, LabelColumns(id="recording", label="activity"))
    assert rows == [{"sample_id": "r1", "label": "walking", "split": "test"}]  # `partition` is a common name
    with pytest.raises(BadInputError, match="no label column 'klass'"):
        read_label_file(path, LabelColumns(id="recording", label="klass"))


def test_a_folder_per_split_is_read_from_the_record_pattern(project: Path) -> None:
    pipeline.pull_domain("industrial")
    pack = yaml.safe_load((REPO / "mmops" / "domains" / "industrial.yaml").read_text())
    pack["record_pattern"] = r"^(?P<split>[^/]+)/(?P<modality>[^/]+)/(?P<key>[^/]+)\.[^./]+$"
    (project / "domains").mkdir()
    (project / "domains" / "industrial.yaml").write_text(yaml.safe_dump(pack))
    land = project / "landing" / "industrial"
    for modality in ("accel", "gyro"):
        for f in sorted((land / modality).iterdir()):
            dest = land / _published_split(f.stem) / modality / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(f, dest)
        (land / modality).rmdir()
    # a file landed under a folder that is no split, and a record's file in the other split's folder
    (land / "extra" / "accel").mkdir(parents=True)
    shutil.copy(land / "test" / "accel" / "bm_test_000.csv", land / "extra" / "accel" / "bm_extra.csv")
    shutil.move(land / "test" / "gyro" / "bm_test_001.csv", land / "train" / "gyro" / "bm_test_001.csv")
    summary = pipeline.ingest("industrial")
    assert summary.ingested == 159 and summary.quarantined == 2
    with session_scope() as s:
        splits = {k: v for k, v in s.query(Sample.sample_key, Sample.split)}
        reasons = dict(s.execute(select(SampleFile.source_path, SampleFile.reason)
                                 .where(SampleFile.status == "quarantined")).all())
    assert all(v == _published_split(k) for k, v in splits.items()) and len(splits) == 80
    assert "split folder 'extra'" in reasons["extra/accel/bm_extra.csv"]
    assert "is in the 'test' split; this file sits in the 'train' split's folder" in reasons[
        "train/gyro/bm_test_001.csv"]
    shutil.move(land / "train" / "gyro" / "bm_test_001.csv", land / "test" / "gyro" / "bm_test_001.csv")
    assert pipeline.ingest("industrial").ingested == 1  # where it belongs
    pipeline.label("industrial")
    pipeline.validate("industrial")
    assert pipeline.build("industrial").split_counts == {"train": 32, "val": 8, "test": 40}


def test_given_val_and_test_are_kept_and_a_split_without_test_is_refused() -> None:
    def rec(key: str, label: str, split: str | None) -> Record:
        return Record(key, label, {}, split)

    records = [rec(f"k{i}", "ab"[i % 2], ["train", "val", "test", None][i % 4]) for i in range(40)]
    m = build_manifest("d", ["a", "b"], ["x"], records, 0.2, 0.2, 7)
    assert m.split_counts == {"train": 20, "val": 10, "test": 10} and m.params["val_from_train"] is False
    given = {r.key: r.split for r in records}
    assert all(row["split"] == (given[row["key"]] if given[row["key"]] in ("val", "test") else "train")
               for row in m.records)
    with pytest.raises(ValidationFailedError, match="no test records"):
        build_manifest("d", ["a", "b"], ["x"], [rec(f"k{i}", "ab"[i % 2], "train") for i in range(8)], 0.2, 0.2, 7)


def test_a_one_modality_pack_reads_a_flat_folder_and_a_multimodal_one_needs_the_modality() -> None:
    import re

    from mmops.domains import DomainPack

    base = {"name": "plugs", "description": "d", "classes": ["a", "b"],
            "modalities": [{"name": "current", "kind": "sensor", "channels": ["amps"], "length": 50,
                            "sample_rate_hz": 10}]}
    pack = DomainPack.model_validate({**base, "record_pattern": r"^(?P<key>[^/]+)\.csv$"})
    assert pack.route(re.compile(pack.record_pattern).fullmatch("plug_007.csv")) == ("plug_007", "current")
    two = [*base["modalities"], {**base["modalities"][0], "name": "voltage"}]
    with pytest.raises(ValueError, match=r"more than one modality, \(\?P<modality>"):
        DomainPack.model_validate({**base, "modalities": two, "record_pattern": r"^(?P<key>[^/]+)\.csv$"})
    flat = DomainPack.model_validate({**base, "modalities": two,
                                      "record_pattern": r"^(?P<key>[^/]+)_(?P<modality>current|voltage)\.csv$"})
    assert flat.route(re.compile(flat.record_pattern).fullmatch("p1_voltage.csv")) == ("p1", "voltage")
