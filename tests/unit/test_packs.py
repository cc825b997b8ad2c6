import hashlib
from pathlib import Path

import numpy as np
import pytest

from mmops.datasets.packs import PACKS, pull
from mmops.domains import load_domain
from mmops.modalities import decode


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", sorted(PACKS))
def test_pull_is_byte_for_byte_deterministic_and_decodable(name: str, tmp_path: Path) -> None:
    a, b = pull(name, tmp_path / "a"), pull(name, tmp_path / "b")
    assert tree_digest(a.landing) == tree_digest(b.landing)
    again = pull(name, tmp_path / "a")
    assert again.files_written == 0  # idempotent: nothing rewritten
    pack = load_domain(a.domain)
    for modality in pack.modality_names:
        files = sorted((a.landing / modality).iterdir())
        assert files, f"{name} landed no {modality} files"
        decode(files[0].read_bytes(), pack.modality(modality))  # raises if unreadable
    assert sum(a.class_counts.values()) == a.records
    assert set(a.class_counts) == set(pack.classes)


def test_medical_pack_carries_three_modalities_with_gaps(tmp_path: Path) -> None:
    res = pull("medical-cxr", tmp_path)
    counts = {m: len(list((res.landing / m).iterdir())) for m in ("report", "ecg", "fundus")}
    assert counts["report"] == res.records == 600
    # some cases lack the ECG or the image, as real cases do, but most have them
    assert 0.8 * res.records < counts["ecg"] < res.records
    assert 0.75 * res.records < counts["fundus"] < res.records


def test_industrial_records_pair_two_real_sensors(tmp_path: Path) -> None:
    res = pull("industrial-imu", tmp_path)
    accel = {p.stem for p in (res.landing / "accel").iterdir()}
    gyro = {p.stem for p in (res.landing / "gyro").iterdir()}
    assert accel == gyro and len(accel) == 80
    pack = load_domain("industrial")
    x = decode((res.landing / "accel" / "bm_train_000.csv").read_bytes(), pack.modality("accel")).value
    assert x.shape == (100, 3) and np.isfinite(x).all()
