"""Reference sketches: the streaming check decides like the tests Evidently picks, computed on raw data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mmops.drift import DriftCheck, ReferenceSketch
from mmops.drift.cells import CellIndex
from mmops.errors import BadInputError


def check(ref: pd.DataFrame, chunks: list[pd.DataFrame], **kw) -> tuple[ReferenceSketch, DriftCheck]:
    sketch = ReferenceSketch.build(ref, **kw)
    c = DriftCheck(sketch)
    for chunk in chunks:
        c.update(chunk)
    return sketch, c


@pytest.mark.parametrize("name", ["quantiles", "integers", "one anchor", "outliers", "tiny range", "none"])
def test_the_cell_index_finds_what_a_binary_search_finds(name: str) -> None:
    rng = np.random.default_rng(3)
    anchors = {"quantiles": np.unique(np.quantile(rng.lognormal(0, 0.7, 100_000), np.linspace(0, 1, 1000))),
               "integers": np.arange(0.0, 60.0), "one anchor": np.array([2.5]),
               "outliers": np.r_[np.sort(rng.normal(size=990)), 1e12 * np.arange(1, 11)],  # crowded buckets
               "tiny range": 1e9 + np.arange(50) * 1e-6, "none": np.zeros(0)}[name]
    anchors = np.unique(anchors)
    centre, spread = (np.mean(anchors), 3 * np.std(anchors) + 1) if len(anchors) else (0.0, 1.0)
    x = np.concatenate([anchors, np.nextafter(anchors, np.inf), np.nextafter(anchors, -np.inf),  # at and beside
                        rng.choice(anchors, 1000) if len(anchors) else np.zeros(0),
                        rng.normal(centre, spread, 20_000), [-1e300, 1e300, 0.0]])
    right = np.searchsorted(anchors, x, "right")
    expected = 2 * right - ((right > 0) & (anchors[np.maximum(right - 1, 0)] == x) if len(anchors) else 0)
    assert np.array_equal(CellIndex(anchors).cells(x), expected)


def test_ks_from_the_sketch_is_scipys_on_the_raw_data() -> None:
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"a": rng.normal(size=800), "ties": rng.integers(0, 40, 800).astype(float)})
    for shift in (0.0, 0.1, 0.3):
        cur = pd.DataFrame({"a": rng.normal(shift, 1, 5000), "ties": rng.integers(0, 42, 5000).astype(float)})
        _, c = check(ref, [cur[:1234], cur[1234:]])  # in two chunks: counts add up
        v = c.verdict()
        for col in ("a", "ties"):
            assert v.columns[col].method == "ks"
            assert v.columns[col].score == pytest.approx(stats.ks_2samp(ref[col], cur[col])[1], rel=1e-9, abs=1e-300)


def test_wasserstein_from_quantile_anchors_is_close_to_the_exact_one() -> None:
    rng = np.random.default_rng(1)
    ref = pd.DataFrame({"a": rng.lognormal(size=50_000)})
    for cur_values in (rng.lognormal(size=20_000), rng.lognormal(0.2, 1.1, 20_000), rng.normal(5, 1, 3000)):
        _, c = check(ref, [pd.DataFrame({"a": cur_values})])
        got = c.verdict().columns["a"]
        exact = stats.wasserstein_distance(ref["a"], cur_values) / np.std(ref["a"])
        assert got.method == "wasserstein"
        assert got.score == pytest.approx(exact, rel=0.02, abs=0.005)


def test_categories_few_values_and_embeddings() -> None:
    rng = np.random.default_rng(2)
    ref = pd.DataFrame({"label": rng.choice(["a", "b", "c"], 600), "flag": rng.integers(0, 2, 600).astype(float)})
    emb = rng.normal(size=(600, 8))
    sketch = ReferenceSketch.build(ref, categorical=["label"], embeddings={"text": emb})
    same = DriftCheck(sketch)
    same.update(pd.DataFrame({"label": rng.choice(["a", "b", "c"], 400), "flag": rng.integers(0, 2, 400)}),
                embeddings={"text": rng.normal(size=(400, 8))})
    v = same.verdict()
    assert v.columns["label"].method == "chisquare" and v.columns["flag"].method == "z"
    assert not v.drifted and not v.embeddings["text"].drifted
    shifted = DriftCheck(sketch)
    moved = rng.normal(size=(400, 8))
    moved[:, 0] += 0.5  # one component of eight moves by half a standard deviation
    shifted.update(pd.DataFrame({"label": rng.choice(["a", "b", "c", "new"], 400), "flag": np.ones(400)}),
                   embeddings={"text": moved})
    v = shifted.verdict()
    assert v.drifted_columns == ["flag", "label"] and v.drifted
    assert v.columns["label"].score == 0.0  # a category the reference never had
    assert v.drifted_embeddings == ["text"] and v.embeddings["text"].score > v.embeddings["text"].threshold


def test_embedding_drift_false_alarms_stay_near_five_percent() -> None:
    """The no-drift threshold is a 95th percentile: over many no-drift samples about 5 % alarm."""
    rng = np.random.default_rng(4)
    cov = np.diag(np.linspace(0.2, 3, 16))
    sketch = ReferenceSketch.build(pd.DataFrame({"x": np.zeros(500)}),
                                   embeddings={"e": rng.multivariate_normal(np.zeros(16), cov, 500)})
    alarms = 0
    for _ in range(200):
        c = DriftCheck(sketch)
        c.update(pd.DataFrame({"x": np.zeros(150)}), embeddings={"e": rng.multivariate_normal(np.zeros(16), cov, 150)})
        alarms += c.verdict().embeddings["e"].drifted
    assert 2 <= alarms <= 22  # 10 expected; a binomial(200, 0.05) falls here with probability > 0.99


def test_missing_values_are_counted_and_a_sketch_round_trips(tmp_path) -> None:
    rng = np.random.default_rng(3)
    ref = pd.DataFrame({"a": rng.normal(size=300)})
    sketch = ReferenceSketch.build(ref, meta={"model": "x"})
    sketch.save(tmp_path / "s.json")
    back = ReferenceSketch.load(tmp_path / "s.json")
    assert back.meta == {"model": "x"} and np.array_equal(back.columns["a"].anchors, sketch.columns["a"].anchors)
    c = DriftCheck(back)
    c.update(pd.DataFrame({"a": [np.nan, np.inf, *rng.normal(size=98)]}))
    c.update(pd.DataFrame({"other": [1.0]}))  # lacks the column: nothing tested for it, no crash
    d = c.verdict().columns["a"]
    assert (d.n_current, d.missing_current) == (98, 2) and not d.drifted
    empty = DriftCheck(back).verdict()
    assert empty.columns["a"].method == "none" and not empty.drifted
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(BadInputError):
        ReferenceSketch.load(tmp_path / "bad.json")
    with pytest.raises(BadInputError, match="components"):  # noqa: PT012
        DriftCheck(ReferenceSketch.build(ref, embeddings={"e": np.zeros((300, 4))})).update(
            ref, embeddings={"e": np.zeros((3, 5))})


def test_the_prediction_log_is_read_in_chunks_by_model_and_window(tmp_path) -> None:
    import json

    from mmops.monitoring import iter_prediction_log, last_logged_model

    def line(ts: float, sha: str, x: float, emb: list[float] | None) -> str:
        return json.dumps({"ts": ts, "checkpoint_sha256": sha, "features": {"accel.x_mean": x},
                           "prediction": "walking", "embeddings": {"accel": emb} if emb else {}})

    lines = [line(100 + i, "a", float(i), [float(i), 1.0]) for i in range(5)]
    lines += ["{truncated", line(200, "b", 9.0, None), "[1, 2]", line(300, "a", 7.0, None)]
    path = tmp_path / "log.jsonl"
    path.write_text("\n".join(lines) + "\n")
    chunks = list(iter_prediction_log(path, "a", {"accel": 2}, since=102, chunk_rows=2))
    frames = [c[0] for c in chunks]
    assert [len(f) for f in frames] == [2, 2]  # lines 102, 103 | 104, 300; model b and older lines left out
    assert sum(c[2] for c in chunks) == 2  # the two unreadable lines, counted
    assert list(pd.concat(frames)["accel.x_mean"]) == [2.0, 3.0, 4.0, 7.0]
    last = chunks[-1][1]["accel"]
    assert last[0].tolist() == [4.0, 1.0] and np.isnan(last[1]).all()  # no embedding logged: NaN, not zeros
    assert last_logged_model(path) == "a"
    assert last_logged_model(tmp_path / "none.jsonl") is None


def test_a_log_line_reads_back_as_written_and_a_line_of_another_shape_is_none() -> None:
    """The log's one format: what the service writes (to_line) the monitor reads back (read_line); a line of
    the wrong shape is None (counted by the monitor), never a crash in the middle of a check."""
    from mmops.serving.predlog import Entry, read_line, to_line

    entry = Entry(1700000000.5, "r1", "v3", "a" * 64, {"accel": {"x_mean": 0.25}}, "walking", [0.123456, 0.876544],
                  {"accel": [1.0, 2.0]})
    back = read_line(to_line(entry))
    assert back is not None and back.ts == entry.ts and back.record_id == "r1"
    assert back.checkpoint_sha256 == "a" * 64 and back.prediction == "walking"
    assert back.features == {"accel.x_mean": 0.25} and back.embeddings == {"accel": [1.0, 2.0]}
    legacy = read_line('{"features": {"accel.x_mean": 1}, "prediction": "idle"}')  # no ts, id or model
    assert legacy is not None and legacy.ts is None and legacy.checkpoint_sha256 is None
    for bad in ("{torn", "[1, 2]", '"text"', '{"features": [1, 2]}', '{"features": {}, "embeddings": [0.1]}'):
        assert read_line(bad) is None, bad
    odd = read_line('{"record_id": ["r1"], "ts": true, "checkpoint_sha256": ""}')  # wrong types: unknown
    assert odd is not None and odd.record_id is None and odd.ts is None and odd.checkpoint_sha256 is None


def test_a_record_id_of_the_wrong_type_does_not_break_the_accuracy_join(tmp_path) -> None:
    import json

    from mmops.monitoring import served_performance

    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps(x) for x in [
        {"ts": 1, "record_id": ["r1"], "prediction": "a"},  # a list as an id: before, an unhashable-type crash
        {"ts": 2, "record_id": "r1", "prediction": "a"}, {"ts": 3, "record_id": "r2", "prediction": "a"}]) + "\n")
    assert served_performance(log, None, None, {"r1": "a", "r2": "b"})["accuracy"] == 0.5


def test_the_logs_of_several_replicas_are_read_as_one_stream(tmp_path, monkeypatch) -> None:
    """Replicas on a shared volume each append to <domain>@<replica>.jsonl (MMOPS_REPLICA); the monitor reads
    them all: the newest line of any replica names the served model, the latest answer per record counts."""
    import json

    from mmops.monitoring import iter_prediction_log, last_logged_model, served_performance
    from mmops.serving.predlog import log_files, log_name

    monkeypatch.setenv("MMOPS_REPLICA", "mmops-industrial-7d9f/../x")
    assert log_name("industrial") == "industrial@mmops-industrial-7d9f_.._x.jsonl"  # no path out of the folder
    assert log_name("industrial", worker=2) == "industrial@mmops-industrial-7d9f_.._x-w2.jsonl"  # its 2nd worker
    monkeypatch.setenv("MMOPS_REPLICA", "")
    assert log_name("industrial") == "industrial.jsonl"
    assert log_name("industrial", worker=1) == "industrial@w1.jsonl"  # a service of several workers

    def line(ts: float, sha: str, rid: str, pred: str) -> str:
        return json.dumps({"ts": ts, "checkpoint_sha256": sha, "record_id": rid, "features": {"x": ts},
                           "prediction": pred})

    (tmp_path / "industrial@pod-a.jsonl").write_text(line(10, "old", "r1", "walking") + "\n"
                                                     + line(30, "new", "r2", "running") + "\n")
    (tmp_path / "industrial@pod-b.jsonl").write_text(line(20, "new", "r1", "running") + "\n"
                                                     + line(25, "old", "r3", "walking") + "\n")
    (tmp_path / "security@pod-a.jsonl").write_text(line(99, "other", "s", "face") + "\n")
    logs = log_files(tmp_path, "industrial")
    assert [p.name for p in logs] == ["industrial@pod-a.jsonl", "industrial@pod-b.jsonl"]
    assert last_logged_model(logs) == "new"  # pod-a's ts 30 is the newest line of any replica
    frames = [c[0] for c in iter_prediction_log(logs, "new", {})]
    assert sorted(pd.concat(frames)["x"]) == [20.0, 30.0]
    perf = served_performance(logs, None, None, {"r1": "running", "r2": "running", "r3": "running"})
    assert perf["n_labeled"] == 3 and perf["accuracy"] == 2 / 3  # r1's later answer (pod-b, ts 20) counts


def test_a_modality_drifts_on_corrected_p_values_and_on_distances() -> None:
    from mmops.drift import ColumnDrift, drift_by_group

    def col(method: str, score: float, threshold: float) -> ColumnDrift:
        drifted = score >= threshold if method == "wasserstein" else score <= threshold
        return ColumnDrift(method, score, threshold, drifted, 100, 0)

    # three correlated image statistics at p 0.015-0.05 of four (corrected level 0.0125): drifted one by one,
    # not as a modality
    chance = {"img.contrast": col("ks", 0.047, 0.05), "img.sharpness": col("ks", 0.015, 0.05),
              "img.blur": col("ks", 0.027, 0.05), "img.brightness": col("ks", 0.4, 0.05)}
    real = {"acc.x_mean": col("ks", 1e-9, 0.05), "acc.x_std": col("ks", 1e-6, 0.05), "acc.y_mean": col("ks", 0.3, 0.05)}
    wide = {"big.a": col("wasserstein", 0.4, 0.1), "big.b": col("wasserstein", 0.02, 0.1)}
    shares = drift_by_group({**chance, **real, **wide, "prediction": col("ks", 0.0, 0.05),
                             "img.width": ColumnDrift("none", float("nan"), float("nan"), False, 0, 0)})
    assert shares == {"acc": pytest.approx(2 / 3), "big": 0.5, "img": 0.0}


def test_dashboard_numbers_put_every_test_on_one_scale() -> None:
    """>= 1 means past the test's own threshold, whether it is a p-value or a distance."""
    import math

    from mmops.dashboards import drift_strength, verdict_row
    from mmops.domains import load_domain

    assert drift_strength("ks", 0.05, 0.05) == pytest.approx(1.0)
    assert drift_strength("ks", 0.5, 0.05) < 1 < drift_strength("chisquare", 1e-6, 0.05)
    assert drift_strength("wasserstein", 0.2, 0.1) == pytest.approx(2.0)
    assert drift_strength("ks", 0.0, 0.05) == pytest.approx(math.log(1e-300) / math.log(0.05))
    assert drift_strength("none", float("nan"), float("nan")) == 0.0
    report = {"drift_share": 0.5, "drifted": True, "n_current": 10, "group_shares": {"accel": 1.0, "gyro": 0.0},
              "columns": {"accel.x_mean": {"method": "ks", "score": 0.001, "threshold": 0.05, "drifted": True},
                          "gyro.x_mean": {"method": "ks", "score": 0.9, "threshold": 0.05, "drifted": False},
                          "prediction": {"method": "chisquare", "score": 0.5, "threshold": 0.05, "drifted": False}},
              "embeddings": {"accel": {"method": "distance", "score": 3.0, "threshold": 1.5, "drifted": True}},
              "prediction_counts": {"walking": 3, "running": 1},
              "performance": {"n_labeled": 4, "accuracy": 0.75, "macro_f1": 0.5, "test_accuracy": None,
                              "estimated_accuracy": 0.7}}
    row = verdict_row(report, load_domain("industrial"))
    assert row["share:accel"] == 1.0 and row["drifted_features:accel"] == 1 and row["drifted_features:gyro"] == 0
    assert row["feature:accel.x_mean"] > 1 > row["feature:gyro.x_mean"] and row["embedding:accel"] == 2.0
    assert row["predicted:walking"] == 0.75 and row["predicted:standing"] == 0.0
    assert row["served_accuracy"] == 0.75 and "test_accuracy" not in row and row["n_labeled"] == 4
    assert row["estimated_accuracy"] == 0.7  # beside the served accuracy, from every answer, no labels


def test_evidently_renders_embedding_drift_on_the_samples(tmp_path) -> None:
    """check_drift keeps a sample of each side's embeddings and has Evidently's embedding drift (distance with
    bootstrap, t-SNE plot) render them per modality; too small a sample is skipped, saying why."""
    import json

    from mmops.drift import EMBEDDING_SAMPLE
    from mmops.monitoring import check_drift

    rng = np.random.default_rng(5)
    ref = pd.DataFrame({"image.brightness": rng.normal(size=300)})
    ref_emb = rng.normal(size=(300, 8))
    ref_emb[::7] = np.nan  # records without the modality are not sampled
    sketch = ReferenceSketch.build(ref, embeddings={"image": ref_emb, "text": rng.normal(size=(3, 8)),
                                                    "small": rng.normal(size=(16, 8))})
    sketch.save(tmp_path / "s.json")
    sketch = ReferenceSketch.load(tmp_path / "s.json")  # the sample travels with the model
    assert sketch.embeddings["image"].sample.shape == (EMBEDDING_SAMPLE, 8)
    assert np.isfinite(sketch.embeddings["image"].sample).all()

    def chunks(shift: float):
        for _ in range(3):
            emb = rng.normal(size=(150, 8))
            emb[:, :4] += shift
            yield pd.DataFrame({"image.brightness": rng.normal(size=150)}), {"image": emb, "text": emb, "small": emb}, 0

    for shift, out in ((0.0, tmp_path / "same"), (1.0, tmp_path / "moved")):
        result = check_drift(sketch, chunks(shift), 0.5, out, "test")
        report = json.loads(result.json_path.read_text())["evidently_embeddings"]
        assert report["image"]["drifted"] is (shift > 0), report["image"]
        assert (report["image"]["n_reference"], report["image"]["n_current"]) == (EMBEDDING_SAMPLE, EMBEDDING_SAMPLE)
        assert (out / "embedding_drift_image.html").stat().st_size > 0 and "embedding:image" in result.snapshots
        assert "too few embeddings" in report["text"]["skipped"] and "embedding:text" not in result.snapshots
        assert not (out / "embedding_drift_text.html").exists()
        # 16 reference rows: Evidently's bootstrap takes 16**2 / (16 + current) rows, so a smaller current sample
        assert (report["small"]["n_reference"], report["small"]["n_current"]) == (16, 16 * 16 // 2 - 16)
        assert result.verdict.embeddings["image"].drifted is (shift > 0)  # the streaming check agrees


def test_a_source_property_constant_on_both_sides_does_not_dilute_its_modalitys_share() -> None:
    """A camera's frame rate and frame size stay put while its picture darkens: the modality drifts on the
    picture's statistics alone; the same property changing is a drift of its own."""
    rng = np.random.default_rng(4)
    n = 300
    fixed = {f"cam.{c}": np.full(n, v) for c, v in (("fps", 10.0), ("width", 160.0), ("height", 120.0),
                                                    ("frames", 40.0), ("sampled", 8.0), ("seconds", 4.0))}
    ref = pd.DataFrame({**fixed, "cam.brightness": rng.normal(0.5, 0.05, n), "cam.blur": rng.normal(200, 20, n),
                        "cam.motion": rng.normal(0.02, 0.005, n)})
    darker = pd.DataFrame({**fixed, "cam.brightness": rng.normal(0.22, 0.05, n), "cam.blur": rng.normal(60, 20, n),
                           "cam.motion": rng.normal(0.02, 0.005, n)})
    v = check(ref, [darker])[1].verdict()
    assert v.columns["cam.fps"].method == "constant" and not v.columns["cam.fps"].drifted
    assert v.group_shares["cam"] == pytest.approx(2 / 3) and v.drifted_groups == ["cam"]  # of 3 tested, not 9
    faster = darker.assign(**{"cam.fps": 25.0})
    assert check(ref, [faster])[1].verdict().columns["cam.fps"].drifted  # a property that changed does drift
