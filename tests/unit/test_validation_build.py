from pathlib import Path

import pytest

from mmops import pipeline
from mmops.catalog import ValidationRun, session_scope
from mmops.errors import ValidationFailedError


def _ingested(domain: str) -> None:
    pipeline.pull_domain(domain)
    pipeline.ingest(domain)


def test_good_batch_passes_and_builds_a_reproducible_version(project: Path) -> None:
    _ingested("industrial")
    pipeline.label("industrial")
    gate = pipeline.validate("industrial")
    assert gate.success and gate.n_expectations > 10
    # Great Expectations Data Docs: an HTML site with the suites and this run's results
    index = Path(gate.data_docs.removeprefix("file://"))
    assert index == project / "artifacts" / "industrial" / "data_docs" / "index.html"
    pages = {p.relative_to(index.parent).parts[0] for p in index.parent.rglob("*.html")}
    assert {"index.html", "expectations", "validations"} <= pages
    assert "industrial.accel" in index.read_text() and "<html" in index.read_text().lower()
    a = pipeline.build("industrial")
    b = pipeline.build("industrial")
    assert a.dataset_version == b.dataset_version
    assert a.split_counts == {"train": 48, "val": 16, "test": 16}


def test_build_refuses_without_a_passing_gate(project: Path) -> None:
    _ingested("industrial")
    pipeline.label("industrial")
    with pytest.raises(ValidationFailedError, match="has not run"):
        pipeline.build("industrial")


def test_missing_class_fails_the_gate_and_names_the_expectation(project: Path) -> None:
    _ingested("industrial")
    labels = project / "landing" / "industrial" / "labels.csv"
    labels.write_text("".join(ln for ln in labels.read_text().splitlines(keepends=True) if "badminton" not in ln))
    pipeline.label("industrial")
    with pytest.raises(ValidationFailedError) as err:
        pipeline.validate("industrial")
    assert "expect_column_distinct_values_to_contain_set(label)" in str(err.value)
    assert "Data Docs file://" in str(err.value)  # the failure links the HTML report
    with session_scope() as s:
        run = s.query(ValidationRun).one()
        assert not run.success and run.failed
    with pytest.raises(ValidationFailedError, match="failed"):
        pipeline.build("industrial")


def test_blank_camera_frames_fail_the_gate(project: Path) -> None:
    import numpy as np

    from mmops.modalities.image import png_bytes

    pipeline.pull_domain("security")
    cam = project / "landing" / "security" / "camera"
    for p in sorted(cam.iterdir())[:40]:  # a dead camera: constant grey frames
        p.write_bytes(png_bytes(np.full((25, 25), 128, dtype=np.uint8)))
    pipeline.ingest("security")
    pipeline.label("security")
    with pytest.raises(ValidationFailedError, match=r"camera: expect_column_values_to_be_between\(contrast\)"):
        pipeline.validate("security")


def test_profiled_suites_are_a_reviewable_file_that_the_gate_then_uses(project: Path) -> None:
    import yaml

    from mmops.errors import ConfigError

    _ingested("industrial")
    pipeline.label("industrial")
    schema_gate = pipeline.validate("industrial")
    pipeline.build("industrial")
    out = pipeline.validate("industrial", profile=True)
    path = Path(out.suites_file)
    assert path == project / "expectations" / "industrial.yaml" and out.reference.startswith("industrial-")
    text = path.read_text()
    assert text.startswith("# Validation suites of the industrial domain") and "x_flat_share" in text

    gate = pipeline.validate("industrial")  # the same data passes its own profile, without warnings
    assert gate.success and gate.warnings == []
    assert gate.n_expectations == out.expectations > schema_gate.n_expectations

    doc = yaml.safe_load(text)  # a reviewer tightens the file: the gate follows it
    doc["suites"]["labels"].append({"expectation": "ExpectTableRowCountToBeBetween",
                                    "kwargs": {"min_value": 1000}, "severity": "critical"})
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValidationFailedError, match=r"labels: expect_table_row_count_to_be_between\(table\)"):
        pipeline.validate("industrial")
    doc["suites"]["labels"][-1]["expectation"] = "ExpectTableRowCountToBeBetwen"  # a typo is an error, not a skip
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="ExpectTableRowCountToBeBetwen"):
        pipeline.validate("industrial")
