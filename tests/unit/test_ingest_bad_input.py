"""Every bad-input case the ingest must survive: each lands in quarantine with its reason, good files go in."""

import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from sqlalchemy import func, select

from mmops import pipeline
from mmops.catalog import SampleFile, session_scope
from tests.images import encoded, png_header_claiming

pytestmark = pytest.mark.catalog  # the PostgreSQL pass runs these too (conftest)

PLANT = {
    "name": "plant",
    "description": "test pack: a camera frame, an IMU series and an operator note per machine cycle",
    "classes": ["ok", "fault"],
    "modalities": [
        {"name": "camera", "kind": "image", "size": [16, 16], "channels": 1, "max_pixels": 4000 * 4000},
        {"name": "imu", "kind": "sensor", "channels": ["x", "y"], "length": 20, "sample_rate_hz": 10},
        {"name": "note", "kind": "text", "max_chars": 500},
    ],
}


def png(seed: int, w: int = 20, h: int = 16) -> bytes:
    return encoded(seed, w, h)


def jpeg(seed: int) -> bytes:
    return encoded(seed, 16, 16, channels=3, fmt="JPEG")


def csv(rows: list[tuple], header: str = "timestamp,x,y") -> bytes:
    return (header + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n").encode()


def good_series(seed: int) -> list[tuple]:
    rng = np.random.default_rng(seed)
    return [(round(i * 0.1, 3), round(float(rng.normal()), 4), round(float(rng.normal()), 4)) for i in range(20)]


def parquet(columns: dict) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


@pytest.fixture
def plant(project: Path) -> Path:
    (project / "domains").mkdir()
    (project / "domains" / "plant.yaml").write_text(yaml.safe_dump(PLANT))
    land = project / "landing" / "plant"
    for d in ("camera", "imu", "note"):
        (land / d).mkdir(parents=True)
    for i in range(6):  # six good machine cycles
        (land / "camera" / f"cycle{i}.png").write_bytes(png(i))
        (land / "imu" / f"cycle{i}.csv").write_bytes(csv(good_series(i)))
        (land / "note" / f"cycle{i}.txt").write_text(f"cycle {i}: spindle sounds normal", encoding="utf-8")
    return land


BAD_CASES = {
    "camera/zero.png": (b"", "empty file"),
    "camera/truncated.png": (png(9)[:60], "not a readable image"),
    "camera/truncated.jpg": (jpeg(9)[:200], "not a readable image"),
    "camera/text.png": (b"this is a text file saved as .png\n", "not a readable image"),
    "camera/bomb.png": (png_header_claiming(50000, 50000), "over the pixel limit"),
    "camera/tiny.png": (png(3, w=4, h=4), "smaller than 8 pixels"),
    "imu/missing_column.csv": (csv([(0, 1), (0.1, 2)], "timestamp,x"), "missing columns ['y']"),
    "imu/extra_column.csv": (csv([(0, 1, 2, 3), (0.1, 2, 3, 4)], "timestamp,x,y,z"), "unexpected columns ['z']"),
    "imu/strings.csv": (csv([(0, 1, 2), (0.1, "high", 3)]), "non-numeric value"),
    "imu/nan.csv": (csv([(0, 1, 2), (0.1, "nan", 3)]), "NaN or infinite"),
    "imu/inf.csv": (csv([(0, 1, 2), (0.1, "inf", 3)]), "NaN or infinite"),
    "imu/backwards.csv": (csv([(0, 1, 2), (0.2, 2, 3), (0.1, 3, 4)]), "not strictly increasing"),
    "imu/wrong_rate.csv": (csv([(i * 0.01, 1, 2) for i in range(20)]), "sampling rate is 100 Hz, expected 10 Hz"),
    "imu/ragged.csv": (b"timestamp,x,y\n0,1,2\n0.1,2\n", "has 2 fields"),
    "imu/strings.parquet": (parquet({"timestamp": [0.0, 0.1], "x": ["a", "b"], "y": [1.0, 2.0]}), "not numeric"),
    "imu/truncated.parquet": (parquet({"timestamp": [0.0, 0.1], "x": [1.0, 2.0], "y": [1.0, 2.0]})[:40],
                              "not a readable Parquet"),
    "note/latin1.txt": ("Température élevée, arrêt".encode("cp1252"), "not valid UTF-8"),
    "note/utf16.txt": ("spindle hot".encode("utf-16"), "UTF-16"),
    "note/blank.txt": (b"   \n", "text is empty"),
    "note/nul.txt": (b"a\x00b", "NUL"),
    "note/long.txt": (b"x" * 501, "over the 500 limit"),
    "note/bad key!.txt": (b"fine text", "record key"),
    "sound/cycle1.wav": (b"RIFF", "unknown modality 'sound'"),
}


def test_every_bad_input_lands_in_quarantine_and_the_good_files_go_in(plant: Path, tmp_path: Path) -> None:
    for rel, (data, _) in BAD_CASES.items():
        (plant / rel).parent.mkdir(parents=True, exist_ok=True)
        (plant / rel).write_bytes(data)
    secret = tmp_path / "outside.png"
    secret.write_bytes(png(7))
    os.symlink(secret, plant / "camera" / "escape.png")  # a link out of the landing folder
    os.symlink(tmp_path, plant / "imu" / "linked_dir")  # a linked folder
    (plant / "labels.csv").write_text("sample_id,label\ncycle0,ok\ncycle1,fault\nghost,ok\ncycle2,unknown\n")

    summary = pipeline.ingest("plant")
    assert summary.ingested == 18  # 6 cycles x 3 modalities, all of them
    assert summary.quarantined == len(BAD_CASES) + 2
    with session_scope() as s:
        rows = {r.source_path: r for r in s.scalars(select(SampleFile).where(SampleFile.status == "quarantined"))}
    for rel, (data, reason) in BAD_CASES.items():
        assert reason in rows[rel].reason, (rel, rows[rel].reason)
        copy = project_quarantine(plant) / f"{rows[rel].sha256[:12]}_{Path(rel).name}"
        assert copy.read_bytes() == data, rel  # the evidence is kept, byte for byte
    assert "symbolic link" in rows["camera/escape.png"].reason
    assert "symbolic link" in rows["imu/linked_dir"].reason
    assert not list((plant.parents[1] / "data").rglob("outside*"))

    labels = pipeline.label("plant").files[0]
    assert labels["imported"] == 2
    assert "no such record" in labels["rejected"]["ghost"]
    assert "not a class" in labels["rejected"]["cycle2"]

    again = pipeline.ingest("plant")  # nothing new: nothing read, nothing added
    assert again.ingested == again.quarantined == 0 and again.skipped == summary.seen


def project_quarantine(landing: Path) -> Path:
    return landing.parents[1] / "quarantine" / "plant"


def test_hostile_paths_from_an_object_store_are_refused(plant: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Object stores accept keys like `camera/../../x`: they are refused, never resolved."""
    import fsspec

    fs = fsspec.filesystem("memory")
    root = "/mmops-test-landing"
    for path in sorted(plant.rglob("*")):
        if path.is_file():
            fs.pipe(f"{root}/plant/{path.relative_to(plant).as_posix()}", path.read_bytes())
    fs.pipe(f"{root}/plant/camera/../../../etc/cycle9.png", png(1))
    fs.pipe(f"{root}/plant/../cycle8.png", png(2))
    fs.pipe(f"{root}/plant//abs.png", png(3))
    monkeypatch.setenv("MMOPS_LANDING_URL", f"memory://{root}")
    try:
        summary = pipeline.ingest("plant")
        assert summary.ingested == 18
        with session_scope() as s:
            reasons = dict(s.execute(select(SampleFile.source_path, SampleFile.reason)
                                     .where(SampleFile.status == "quarantined")).all())
        assert "escapes the landing folder" in reasons["camera/../../../etc/cycle9.png"]
        assert "escapes the landing folder" in reasons["../cycle8.png"]
        assert any("absolute path" in r or "empty part" in r for p, r in reasons.items() if "abs.png" in p)
        again = pipeline.ingest("plant")
        assert again.ingested == again.quarantined == 0
        # labels and Label Studio exports are read from the same remote landing area
        fs.pipe(f"{root}/plant/labels.csv", b"sample_id,label\ncycle0,ok\ncycle1,ok\n")
        fs.pipe(f"{root}/plant/annotations/export.json", json.dumps([{"data": {"sample_key": "cycle1"}, "annotations": [
            {"completed_by": {"email": "op@plant"}, "result": [
                {"from_name": "label", "type": "choices", "value": {"choices": ["fault"]}}]}]}]).encode())
        labels = pipeline.label("plant")
        assert labels.files[0]["imported"] == 2 and labels.annotations[0]["imported"] == 1
        assert labels.by_kind == {"file": 1, "human": 1} and labels.conflicts == 1
    finally:
        fs.rm(root, recursive=True)


def test_a_scheduled_batch_naming_hostile_paths_is_refused(plant: Path) -> None:
    summary = pipeline.ingest("plant", paths=["camera/cycle0.png", "../../etc/passwd", "/etc/passwd"])
    assert summary.ingested == 1 and summary.quarantined == 2
    assert not (plant.parents[1] / "quarantine" / "plant").exists() or not any(
        "passwd" in p.name for p in (plant.parents[1] / "quarantine" / "plant").iterdir())


def test_reingest_skips_unchanged_files_without_reading_them(plant: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmops.ingest.sources import Landing

    first = pipeline.ingest("plant")
    reads: list[str] = []
    original = Landing.read

    def counting(self, rel, limit):
        reads.append(rel)
        return original(self, rel, limit)

    monkeypatch.setattr(Landing, "read", counting)
    assert pipeline.ingest("plant").skipped == first.seen and reads == []
    os.utime(plant / "camera" / "cycle0.png", ns=(1, 1))  # touched, same bytes: read once, no new row
    (plant / "note" / "cycle1.txt").write_text("cycle 1: bearing noise", encoding="utf-8")  # changed
    third = pipeline.ingest("plant")
    assert sorted(reads) == ["camera/cycle0.png", "note/cycle1.txt"]
    assert third.ingested == 0 and third.quarantined == 1  # the record already has a note
    reads.clear()
    assert pipeline.ingest("plant").skipped == first.seen and reads == []
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(SampleFile)) == 19


def test_record_pattern_groups_files_named_by_the_site(project: Path) -> None:
    pack = dict(PLANT, record_pattern=r"^(?P<key>[a-z0-9]+)_(?P<modality>[a-z]+)\.[a-z]+$")
    (project / "domains").mkdir()
    (project / "domains" / "plant.yaml").write_text(yaml.safe_dump(pack))
    land = project / "landing" / "plant"
    land.mkdir(parents=True)
    (land / "door3_camera.png").write_bytes(png(0))
    (land / "door3_note.txt").write_text("badge 1234 at door 3")
    (land / "door4_camera.png").write_bytes(png(1))  # a record without a note
    (land / "door4-imu.csv").write_bytes(csv(good_series(0)))
    summary = pipeline.ingest("plant")
    assert summary.ingested == 3 and summary.new_records == 2 and summary.quarantined == 1
    from mmops.records import load_records

    with session_scope() as s:
        records = {r.key: sorted(r.files) for r in load_records(s, "plant")}
    assert records == {"door3": ["camera", "note"], "door4": ["camera"]}


def test_transient_read_errors_are_retried_then_raised_for_the_scheduler(
        plant: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flaky source (network, NFS) is not bad input: reads are retried, and if they keep failing the batch
    fails as a whole (Airflow retries the task) instead of quarantining good files."""
    from mmops.ingest import sources

    monkeypatch.setattr(sources.time, "sleep", lambda s: None)
    original = sources.Landing._read_once
    failures = {"camera/cycle1.png": 2, "note/cycle3.txt": 99}

    def flaky(self, rel, limit):
        if failures.get(rel, 0) > 0:
            failures[rel] -= 1
            raise TimeoutError(f"read of {rel} timed out")
        return original(self, rel, limit)

    monkeypatch.setattr(sources.Landing, "_read_once", flaky)
    with pytest.raises(TimeoutError):
        pipeline.ingest("plant")
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(SampleFile)) == 0  # the failed batch left nothing
    failures["note/cycle3.txt"] = 1  # the network recovers
    summary = pipeline.ingest("plant")  # what the scheduler's retry does
    assert summary.ingested == 18 and summary.quarantined == 0


def test_decoding_in_worker_processes_gives_the_same_catalog(plant: Path, project: Path) -> None:
    """`ingest.executor: process` (what `auto` picks for large runs) yields what threads yield."""
    (plant / "imu" / "nan.csv").write_bytes(csv([(0, 1, 2), (0.1, "nan", 3)]))
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["ingest"] = {"executor": "process", "workers": 2, "batch_files": 5}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    summary = pipeline.ingest("plant")
    assert summary.ingested == 18 and summary.quarantined == 1 and summary.batches == 4
    with session_scope() as s:
        rows = {r.source_path: r for r in s.scalars(select(SampleFile))}
    assert "NaN" in rows["imu/nan.csv"].reason
    assert all((project / "data" / r.blob_path).is_file() for r in rows.values() if r.blob_path)
    assert rows["note/cycle0.txt"].stats["n_words"] == 5  # "cycle 0: spindle sounds normal"


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_one_content_in_many_batches_in_flight_is_stored_once_and_linked(
        plant: Path, project: Path, executor: str) -> None:
    """Batches are prepared while the one before is committed, so two batches in flight may both stage the
    same content before either is published: it is stored once, every later copy linked to the first."""
    for i in range(12):
        (plant / "note" / f"copy{i:02d}.txt").write_text("the same note, landed twelve times", encoding="utf-8")
        os.utime(plant / "note" / f"copy{i:02d}.txt", ns=(10**18 + i, 10**18 + i))  # landed in this order
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["ingest"] = {"executor": executor, "workers": 2, "batch_files": 3}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    summary = pipeline.ingest("plant")
    assert summary.ingested == 30 and summary.duplicates == 11 and summary.quarantined == 0
    with session_scope() as s:
        rows = {r.source_path: r for r in s.scalars(select(SampleFile).where(SampleFile.source_path.like("note/copy%")))}
        records = {r.source_path: r.sample.sample_key for r in rows.values()}
    first = rows["note/copy00.txt"]
    assert first.duplicate_of is None
    assert all(r.duplicate_of == first.id and r.blob_path == first.blob_path
               for p, r in rows.items() if p != "note/copy00.txt")
    assert records == {p: p.removeprefix("note/").removesuffix(".txt") for p in rows}
    assert (project / "data" / first.blob_path).read_text() == "the same note, landed twelve times"
    assert not list((project / "data").rglob(".*.tmp"))


def test_worker_processes_are_used_where_they_pay_and_can_work(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`auto` opens processes from PROCESS_THRESHOLD new files (PROCESS_THRESHOLD_WARM once this process has
    a forkserver) from a local folder; never for an in-memory filesystem, nor when the workers could not
    import `__main__`."""
    import sys
    import types

    from mmops.ingest import Landing, pool

    local, memory = Landing(project / "landing"), Landing("memory://landing")
    remote = Landing("memory://bucket")
    remote.fs = types.SimpleNamespace(protocol=("s3", "s3a"))  # an object store: its reads are I/O
    assert not pool.uses_processes("auto", 2, 10**6, remote)
    assert pool.uses_processes("process", 2, 1, remote)
    monkeypatch.setattr(pool, "_opened", [])
    assert not pool.uses_processes("auto", 2, pool.PROCESS_THRESHOLD - 1, local)
    assert pool.uses_processes("auto", 2, pool.PROCESS_THRESHOLD, local)
    assert not pool.uses_processes("auto", 1, pool.PROCESS_THRESHOLD, local)  # one worker: no gain
    assert pool.uses_processes("process", 2, 1, local)
    assert not pool.uses_processes("process", 2, 10**6, memory)
    monkeypatch.setattr(pool, "_opened", [True])
    assert pool.uses_processes("auto", 2, pool.PROCESS_THRESHOLD_WARM, local)
    assert not pool.uses_processes("auto", 2, pool.PROCESS_THRESHOLD_WARM - 1, local)
    stdin_main = types.ModuleType("__main__")
    stdin_main.__file__ = str(project / "<stdin>")  # a script read from standard input
    monkeypatch.setitem(sys.modules, "__main__", stdin_main)
    assert not pool.uses_processes("process", 2, 10**6, local)
