"""Each class of bad batch fails (or warns on) the expectation that names it; a good batch passes clean."""

from pathlib import Path

import pytest

from mmops.domains import DomainPack
from mmops.records import FileRef, Record
from mmops.validation import run_gate

PACK = DomainPack.model_validate({
    "name": "plant", "description": "gate test pack", "classes": ["ok", "fault"],
    "modalities": [
        {"name": "camera", "kind": "image", "size": [16, 16], "channels": 1, "required": True},
        {"name": "imu", "kind": "sensor", "channels": ["x"], "length": 20, "sample_rate_hz": 10,
         "value_range": [-50, 50]},
        {"name": "note", "kind": "text", "redact_phi": True},
    ],
})


def good_records(n: int = 40) -> list[Record]:
    out = []
    for i in range(n):
        camera = {"height": 16.0, "width": 16.0, "brightness": 0.4 + 0.01 * (i % 10), "contrast": 0.2,
                  "sharpness": 0.1, "blur": 300.0 + i}
        imu = {"n_samples": 20.0, "rate_hz": 10.0, "x_mean": 0.1 * i, "x_std": 1.0, "x_min": -3.0, "x_max": 3.0,
               "x_flat_share": 0.05, "x_clip_share": 0.1}
        note = {"n_chars": 40.0, "n_words": 8.0, "non_ascii_share": 0.0, "phi_hits": 0.0}
        out.append(Record(f"r{i:03d}", "ok" if i % 2 else "fault", {
            "camera": FileRef(f"c{i}", f"sha-c{i}", camera), "imu": FileRef(f"i{i}", f"sha-i{i}", imu),
            "note": FileRef(f"n{i}", f"sha-n{i}", note)}))
    return out


def spoil(records: list[Record], modality: str, share: float = 1.0, **stats: float) -> list[Record]:
    n = int(len(records) * share)
    return [Record(r.key, r.label, {**r.files, modality: FileRef(r.files[modality].blob_path, r.files[modality].sha256,
                                                                 {**r.files[modality].stats, **stats})})
            if i < n else r for i, r in enumerate(records)]


def gate(records: list[Record], tmp_path: Path, all_records: list[Record] | None = None):
    return run_gate(PACK, (all_records or []) + records, "fp", tmp_path / "report.json")


def test_a_good_batch_passes_without_warnings(tmp_path: Path) -> None:
    result = gate(good_records(), tmp_path)
    assert result.success and result.warnings == [] and result.n_expectations > 20


CRITICAL = {
    "wrong sampling rate": (lambda rs: spoil(rs, "imu", 0.5, rate_hz=50.0), "imu: expect_column_values_to_be_between(rate_hz)"),
    "flat-lined sensor": (lambda rs: spoil(rs, "imu", 0.5, x_flat_share=0.98), "(x_flat_share)"),
    "out of physical range": (lambda rs: spoil(rs, "imu", 0.1, x_max=400.0), "(x_max)"),
    "dead camera (blank frames)": (lambda rs: spoil(rs, "camera", 0.5, contrast=0.0), "(contrast)"),
    "unredacted PHI in text": (lambda rs: spoil(rs, "note", 0.05, phi_hits=2.0), "note: expect_column_values_to_be_between(phi_hits)"),
    "text over the length limit": (lambda rs: spoil(rs, "note", 0.1, n_chars=50_000.0), "(n_chars)"),
    "a class missing": (lambda rs: [r for r in rs if r.label == "ok"], "expect_column_distinct_values_to_contain_set(label)"),
    "a required modality missing": (lambda rs: [Record(r.key, r.label, {k: v for k, v in r.files.items() if k != "camera"})
                                                if i < 3 else r for i, r in enumerate(rs)], "(has_camera)"),
}


@pytest.mark.parametrize("case", list(CRITICAL))
def test_each_bad_batch_fails_the_expectation_that_names_it(case: str, tmp_path: Path) -> None:
    make, names = CRITICAL[case]
    result = gate(make(good_records()), tmp_path)
    assert not result.success
    assert any(names in line for line in result.failed), result.failed


WARNINGS = {
    "clipped sensor": (lambda rs: spoil(rs, "imu", 0.5, x_clip_share=0.6), "(x_clip_share)"),
    "blurred images": (lambda rs: spoil(rs, "camera", 0.5, blur=0.2), "(blur)"),
    "duplicate images": (lambda rs: [Record(r.key, r.label, {**r.files, "camera": FileRef("c0", "sha-same", r.files["camera"].stats)})
                                     if i < 20 else r for i, r in enumerate(rs)], "(sha256)"),
    "unusual charset": (lambda rs: spoil(rs, "note", 0.5, non_ascii_share=0.9), "(non_ascii_share)"),
    "class imbalance": (lambda rs: [r for r in rs if r.label == "ok"] + [r for r in rs if r.label == "fault"][:5]
                        + [Record(f"x{i}", "ok", rs[1].files) for i in range(60)], "class_balance: "),
}


@pytest.mark.parametrize("case", list(WARNINGS))
def test_warnings_are_reported_and_do_not_fail_the_gate(case: str, tmp_path: Path) -> None:
    make, names = WARNINGS[case]
    result = gate(make(good_records()), tmp_path)
    assert result.success, result.failed
    assert any(names in line for line in result.warnings), result.warnings


def test_low_label_coverage_warns(tmp_path: Path) -> None:
    unlabeled = [Record(f"u{i}", None, good_records(1)[0].files) for i in range(100)]
    result = gate(good_records(), tmp_path, unlabeled)
    assert result.success and any(line.startswith("coverage: ") for line in result.warnings)


def test_statistics_missing_from_old_ingests_fail_with_advice(tmp_path: Path) -> None:
    old = [Record(r.key, r.label, {**r.files, "imu": FileRef("i", r.files["imu"].sha256,
                                                             {k: v for k, v in r.files["imu"].stats.items() if k != "rate_hz"})})
           for r in good_records()]
    result = gate(old, tmp_path)
    assert not result.success and any("rate_hz is missing" in line and "re-ingest" in line for line in result.failed)


def test_variable_length_series_pass_down_to_the_packs_own_minimum(tmp_path: Path) -> None:
    """Series shorter than the model's window are padded and masked; the gate refuses only those under the
    pack's min_length (default: half the window), so a data set of 7- to 29-sample series keeps its window
    at its longest series."""
    imu = PACK.modalities[1].model_dump()
    short = spoil(good_records(), "imu", 0.5, n_samples=7.0)
    assert not gate(short, tmp_path).success  # under half of the 20-sample window
    for min_length, ok in ((7, True), (8, False)):
        pack = PACK.model_copy(update={"modalities": (PACK.modalities[0], type(PACK.modalities[1]).model_validate(
            {**imu, "min_length": min_length}), PACK.modalities[2])})
        result = run_gate(pack, short, "fp", tmp_path / f"report-{min_length}.json")
        assert result.success is ok, result.failed
    with pytest.raises(ValueError, match="min_length 21 is over length 20"):
        type(PACK.modalities[1]).model_validate({**imu, "min_length": 21})
