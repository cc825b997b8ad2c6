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


def test_the_surveillance_scenes_are_what_their_labels_say(tmp_path: Path) -> None:
    """Labels follow from the placement: a tampered camera is frozen or covered (and only then), a break-in is
    an impact over the room's sound; about 8 % of records lack the microphone, whatever the class."""
    res = pull("surveillance-av", tmp_path)
    pack = load_domain("surveillance")
    labels = dict(line.split(",") for line in (res.landing / "labels.csv").read_text().split()[1:])
    assert res.class_counts == {"normal": 40, "tampering": 40, "break_in": 40}
    mics = {p.stem: p for p in (res.landing / "microphone").iterdir()}
    assert 0.85 * res.records <= len(mics) < res.records
    loud: dict[str, list[float]] = {"normal": [], "tampering": [], "break_in": []}
    for key, label in labels.items():
        video = decode((res.landing / "camera" / f"{key}.mp4").read_bytes(), pack.modality("camera")).stats
        # frozen: most consecutive frames the same picture (a codec's refresh frame may differ a little)
        tampered = video["frozen_share"] >= 0.7 or video["brightness"] < 0.12
        assert tampered == (label == "tampering"), (key, label, video)
        if key in mics:
            audio = decode(mics[key].read_bytes(), pack.modality("microphone")).value.astype(np.float64)
            frames = audio[: len(audio) // 400 * 400].reshape(-1, 400)
            db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
            loud[label].append(float(db.max() - np.median(db)))  # the loudest 25 ms over the room
    assert min(loud["break_in"]) > 10 and np.median(loud["break_in"]) > np.median(loud["normal"]) + 5
