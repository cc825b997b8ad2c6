"""Bundled real data packs, landed the way a user would land files: PNG, CSV (timestamp + channels), UTF-8
text, and a labels.csv. Every byte is a pure function of the source package's files, so a pull on any
machine produces the same landing folder (and, after ingest, the same data.dvc hash).

Sources (read offline from installed packages, never downloaded):

- ``security-faces``: scikit-image ``lfw_subset.npy`` - 100 faces and 100 non-faces from Labeled Faces in
  the Wild, 25x25 grayscale. Real images, real labels.
- ``industrial-imu``: sktime ``BasicMotions`` - a wrist-worn smart watch, 3-axis accelerometer and 3-axis
  gyroscope, 10 s at 10 Hz, four activities (80 recordings). Real signals, real labels; every record
  carries two real modalities recorded together.
- ``cardiac-ecg``: sktime ``mitdb.csv`` - 21 s of one MIT-BIH record (lead MLII, 360 Hz) with one annotated
  anomalous stretch, cut into 2 s records every 1/8 s; a record is ``anomaly`` when it holds at least half of
  that stretch, ``normal`` when it holds none of it. The split follows time (the data set's own split
  column): the first 8.3 s trains, the next 4.7 s calibrate, the rest (with the anomaly) tests, and no
  record overlaps one of another split. Real signal, real annotation; for anomaly detection (task: anomaly).
- ``surveillance-av``: COMPOSED, a camera and a microphone (mmops/datasets/scenes.py says how).
- ``inspection-brick``: COMPOSED, defects pasted into crops of a real brick wall for anomaly detection
  (mmops/datasets/surfaces.py says how).
- ``watch-av``: COMPOSED, the same scenes for anomaly detection (task: anomaly): 100 normal nights, 20 with
  the camera tampered with, 20 with a break-in; the training split holds normal nights only.
- ``medical-cxr``: COMPOSED from separate real sources. Each case is one real chest X-ray report from the
  Indiana University collection (torchxrayvision's ``NLMCXR_reports.tgz``, CC BY-NC-ND 4.0: non-commercial
  use only), labelled normal/abnormal from its own MeSH terms. To that report we attach, by class, a real
  ECG strip from MIT-BIH record (sktime ``mitdb.csv``: normal rhythm vs its annotated anomalous segment) and
  a real red-free fundus patch (scikit-image ``retina.jpg`` for normal, ``microaneurysms.png`` for
  abnormal). The pairing across modalities is synthetic: the ECG and the fundus patch do not belong to the
  patient who had that X-ray. Some cases deliberately lack the ECG or the image, as real cases do.
"""

from __future__ import annotations

import logging
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmops.datasets.landing import finish
from mmops.datasets.scenes import write_surveillance_av, write_watch_av
from mmops.datasets.sources import package_file
from mmops.datasets.surfaces import write_inspection_brick
from mmops.errors import ConfigError, NotFoundError
from mmops.modalities.image import png_bytes
from mmops.modalities.sensor import sensor_csv_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pack:
    name: str
    domain: str
    summary: str
    writer: Callable[[Path, int], dict[str, int]]

    @property
    def license(self) -> str:
        """Its sources' licences, as its domain pack's card declares them (one place for both)."""
        from mmops.domains import load_domain

        return load_domain(self.domain).card.licence_line()


@dataclass(frozen=True)
class PullResult:
    pack: str
    domain: str
    landing: Path
    records: int
    files_written: int
    class_counts: dict[str, int]


# --- security-faces -------------------------------------------------------------------------------------


def _write_security_faces(root: Path, seed: int) -> dict[str, int]:
    arr = np.load(package_file("scikit-image", "skimage/data/lfw_subset.npy"))
    files: dict[str, bytes] = {}
    labels: dict[str, str] = {}
    for i, img in enumerate(arr):
        # lfw_subset stores the 100 faces first, then the 100 non-faces.
        key = f"lfw{i:03d}"
        files[f"camera/{key}.png"] = png_bytes(np.round(img * 255).astype(np.uint8))
        labels[key] = "face" if i < 100 else "non_face"
    return finish(root, files, labels)


# --- industrial-imu -------------------------------------------------------------------------------------


def read_ts_file(path: Path) -> tuple[list[np.ndarray], list[str]]:
    """Minimal reader for the equal-length multivariate .ts format (sktime/aeon): (channels x length) each."""
    series: list[np.ndarray] = []
    labels: list[str] = []
    in_data = False
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            in_data = line.lower() == "@data"
            continue
        *dims, label = line.split(":")
        series.append(np.array([[float(v) for v in d.split(",")] for d in dims]))
        labels.append(label.strip())
    return series, labels


def _write_industrial_imu(root: Path, seed: int) -> dict[str, int]:
    files: dict[str, bytes] = {}
    labels: dict[str, str] = {}
    for part in ("TRAIN", "TEST"):
        path = package_file("sktime", f"sktime/datasets/data/BasicMotions/BasicMotions_{part}.ts")
        series, names = read_ts_file(path)
        for i, (x, label) in enumerate(zip(series, names, strict=True)):
            key = f"bm_{part.lower()}_{i:03d}"
            # dims 0-2: accelerometer x,y,z; dims 3-5: gyroscope x,y,z (per the dataset description)
            files[f"accel/{key}.csv"] = sensor_csv_bytes(x[0:3].T, ["x", "y", "z"], 10.0)
            files[f"gyro/{key}.csv"] = sensor_csv_bytes(x[3:6].T, ["x", "y", "z"], 10.0)
            labels[key] = label.lower()
    return finish(root, files, labels)


# --- cardiac-ecg (anomaly detection) -------------------------------------------------------------------

ECG_RATE, ECG_RECORD, ECG_STEP = 360.0, 720, 45


def _write_cardiac_ecg(root: Path, seed: int) -> dict[str, int]:
    raw = np.loadtxt(package_file("sktime", "sktime/datasets/data/mitdb/mitdb.csv"), delimiter=",", skiprows=1)
    signal, anomalous = raw[:, :1], raw[:, 1].astype(bool)
    bounds = {"train": (0, 3000), "val": (3000, 4700), "test": (4700, len(raw))}  # samples: 8.3 s, 4.7 s, 7.8 s
    files: dict[str, bytes] = {}
    labels: dict[str, str] = {}
    splits: dict[str, str] = {}
    for start in range(0, len(raw) - ECG_RECORD + 1, ECG_STEP):
        end = start + ECG_RECORD
        held = int(anomalous[start:end].sum())
        split = next((name for name, (lo, hi) in bounds.items() if lo <= start and end <= hi), None)
        if split is None or 0 < held < anomalous.sum() / 2:
            continue  # it would overlap two splits, or it holds a sliver of the anomaly: neither
        key = f"mitdb_{start:05d}"
        files[f"ecg/{key}.csv"] = sensor_csv_bytes(signal[start:end], ["mlii"], ECG_RATE)
        labels[key], splits[key] = ("anomaly" if held else "normal"), split
    return finish(root, files, labels, splits)


# --- medical-cxr (composed) ----------------------------------------------------------------------------

_SECTION = re.compile(r'<AbstractText Label="(FINDINGS|IMPRESSION)">(.*?)</AbstractText>', re.S)
_MAJOR = re.compile(r"<major>(.*?)</major>", re.S)


def read_cxr_reports() -> list[tuple[int, str, str]]:
    """(report id, text, normal|abnormal) for every report with a findings or impression section."""
    from xml.sax.saxutils import unescape

    out: list[tuple[int, str, str]] = []
    with tarfile.open(package_file("torchxrayvision", "torchxrayvision/data/NLMCXR_reports.tgz")) as tar:
        for member in tar.getmembers():
            if not member.isfile() or not member.name.endswith(".xml"):
                continue
            fh = tar.extractfile(member)
            if fh is None:
                continue
            xml = fh.read().decode("utf-8")
            sections = [f"{k}: {unescape(v.strip())}" for k, v in _SECTION.findall(xml) if v.strip()]
            if not sections:
                continue
            majors = [m.strip() for m in _MAJOR.findall(xml)]
            label = "normal" if majors == ["normal"] else "abnormal"
            out.append((int(Path(member.name).stem), "\n".join(sections) + "\n", label))
    out.sort()
    return out


def _patches(img: np.ndarray, rng: np.random.Generator, crop: int, out: int, n: int) -> list[np.ndarray]:
    """n distinct crops (position x mirror, drawn without replacement) resized to out x out."""
    from PIL import Image

    ny, nx = img.shape[0] - crop + 1, img.shape[1] - crop + 1
    picks = rng.choice(ny * nx * 2, size=n, replace=False)
    result = []
    for p in picks:
        y, x, flip = int(p // 2 // nx), int(p // 2 % nx), bool(p % 2)
        patch = Image.fromarray(img[y : y + crop, x : x + crop]).resize((out, out), Image.Resampling.BILINEAR)
        arr = np.asarray(patch)
        result.append(np.ascontiguousarray(arr[:, ::-1] if flip else arr))
    return result


def _write_medical_cxr(root: Path, seed: int, per_class: int = 300) -> dict[str, int]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    reports = read_cxr_reports()
    chosen: list[tuple[int, str, str]] = []
    for cls in ("normal", "abnormal"):
        pool = [r for r in reports if r[2] == cls]
        idx = np.sort(rng.choice(len(pool), size=min(per_class, len(pool)), replace=False))
        chosen += [pool[i] for i in idx]

    ecg_path = package_file("sktime", "sktime/datasets/data/mitdb/mitdb.csv")
    ecg = np.loadtxt(ecg_path, delimiter=",", skiprows=1)
    signal, anomalous = ecg[:, 0], ecg[:, 1].astype(bool)
    win = 180
    starts = np.arange(0, len(signal) - win)
    anomaly_starts = [s for s in starts if anomalous[s : s + win].mean() > 0.5]
    normal_starts = [s for s in starts if not anomalous[s : s + win].any()]

    retina = np.asarray(Image.open(package_file("scikit-image", "skimage/data/retina.jpg")))[:, :, 1]
    aneurysms = np.asarray(Image.open(package_file("scikit-image", "skimage/data/microaneurysms.png")))

    # Draw each class's ECG windows and fundus patches without replacement: no two cases share a file.
    cases = sorted(chosen)
    n_of = {c: sum(1 for r in cases if r[2] == c) for c in ("normal", "abnormal")}
    ecg_pool = {"normal": list(rng.choice(normal_starts, size=n_of["normal"], replace=False)),
                "abnormal": list(rng.choice(anomaly_starts, size=min(n_of["abnormal"], len(anomaly_starts)),
                                            replace=False))}
    img_pool = {"normal": _patches(retina[200:1200, 200:1200], rng, 128, 32, n_of["normal"]),
                "abnormal": _patches(aneurysms, rng, 48, 32, n_of["abnormal"])}

    files: dict[str, bytes] = {}
    labels: dict[str, str] = {}
    for rid, text, label in cases:
        key = f"cxr{rid:04d}"
        labels[key] = label
        files[f"report/{key}.txt"] = text.encode("utf-8")
        # ~10% of cases have no ECG strip, ~15% no fundus image
        if rng.random() >= 0.1 and ecg_pool[label]:
            start = int(ecg_pool[label].pop())
            files[f"ecg/{key}.csv"] = sensor_csv_bytes(signal[start : start + win, None], ["mlii"], 360.0)
        gray = img_pool[label].pop()
        if rng.random() >= 0.15:
            files[f"fundus/{key}.png"] = png_bytes(np.repeat(gray[:, :, None], 3, axis=2))
    return finish(root, files, labels)


PACKS: dict[str, Pack] = {
    p.name: p
    for p in (
        Pack("security-faces", "security", "LFW faces vs non-faces, 25x25 PNG (200 records)",
             _write_security_faces),
        Pack("industrial-imu", "industrial", "BasicMotions accelerometer + gyroscope CSV (80 records)",
             _write_industrial_imu),
        Pack("medical-cxr", "medical",
             "COMPOSED: real CXR reports + real MIT-BIH ECG strips + real fundus patches, paired by class "
             "(600 records)",
             _write_medical_cxr),
        Pack("cardiac-ecg", "cardiac", "MIT-BIH ECG, 2 s records, normal vs the annotated anomaly; split by time "
             "(anomaly detection)", _write_cardiac_ecg),
        Pack("surveillance-av", "surveillance",
             "COMPOSED: 4 s clips of a real surveillance scene + real room noise, voices and impact sounds, "
             "labels from the placement: normal, tampering, break_in (120 records)",
             write_surveillance_av),
        Pack("watch-av", "watch",
             "COMPOSED: the surveillance scenes, mostly normal nights; the training split holds only those "
             "(anomaly detection, 140 records)",
             write_watch_av),
        Pack("inspection-brick", "inspection",
             "COMPOSED: 64x64 crops of a real brick wall, real gravel or grass pasted in as defects; the training "
             "split holds normal crops only (anomaly detection, 162 records)",
             write_inspection_brick),
    )
}


def get_pack(name: str) -> Pack:
    try:
        return PACKS[name]
    except KeyError:
        raise NotFoundError(f"unknown data pack {name!r}; known: {', '.join(sorted(PACKS))}") from None


def pack_for(domain: str, name: str) -> Pack:
    """Bundled pack `name`, checked to be one for `domain` (it lands in landing/<its domain>/)."""
    pack = get_pack(name)
    if pack.domain != domain:
        raise ConfigError(f"data pack {name} is for domain {pack.domain}, not {domain}")
    return pack


def pull(name: str, landing_root: Path, seed: int = 0) -> PullResult:
    """Write pack `name` into `landing_root/<domain>/`. Idempotent: unchanged files are not rewritten.

    The seed is fixed per pack (not params.seed) so that the landed bytes never depend on experiment config.
    """
    pack = get_pack(name)
    target = landing_root / pack.domain
    stats = pack.writer(target, seed)
    counts = {k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("class:")}
    log.info("pulled %s into %s: %s", name, target, stats)
    return PullResult(pack.name, pack.domain, target, stats["records"], stats["files_written"], counts)
