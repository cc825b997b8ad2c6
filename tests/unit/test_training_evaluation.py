import hashlib
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mmops import pipeline
from mmops.catalog import DatasetVersion, Label, ModelVersion, Sample, TrainingRun, session_scope
from mmops.inference import Predictor

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("domain,floor", [("security", 0.75), ("industrial", 0.5)])
def test_trained_model_beats_chance_on_held_out_data(use_project: Path, domain: str, floor: float) -> None:
    metrics = json.loads((use_project / "artifacts" / domain / "metrics.json").read_text())
    assert metrics["accuracy"] >= floor, metrics
    assert (use_project / "artifacts" / domain / "confusion_matrix.png").stat().st_size > 1000
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["n"]
    assert 0.5 < metrics["auroc"] <= 1 and 0 <= metrics["ece"] < 0.5
    assert (use_project / "artifacts" / domain / "roc.png").stat().st_size > 1000


def test_auroc_and_calibration_error_are_computed_correctly() -> None:
    import numpy as np

    from mmops.evaluation import auroc, expected_calibration_error

    y = np.array([0, 0, 1, 1])
    perfect = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    assert auroc(y, perfect) == 1.0
    assert auroc(y, perfect[:, ::-1]) == 0.0
    assert auroc(np.array([0, 0]), perfect[:2]) is None  # a split without positives: undefined, not a number
    # always 90 % sure, right half of the time: badly calibrated by 0.4
    overconfident = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.9, 0.1]])
    assert expected_calibration_error(y, overconfident) == pytest.approx(0.4)
    # 70 % sure and right 70 % of the time: calibrated
    y10 = np.array([0] * 7 + [1] * 3)
    assert expected_calibration_error(y10, np.tile([0.7, 0.3], (10, 1))) == pytest.approx(0.0)
    three = np.eye(3)[[0, 1, 2, 0, 1, 2]] * 0.8 + 0.2 / 3
    assert auroc(np.array([0, 1, 2, 0, 1, 2]), three) == 1.0


def test_temperature_scaling_recovers_a_known_temperature_and_never_changes_the_answer() -> None:
    """Labels drawn from softmax(z) and a model that says softmax(3 z): the fitted temperature is about 3, the
    calibrated probabilities' ECE is far below the over-confident ones', the argmax is the same, and
    `uncalibrated` gives back the probabilities before scaling."""
    import numpy as np
    from scipy.special import softmax

    from mmops.evaluation import expected_calibration_error
    from mmops.tasks.temperature import fit_temperature, uncalibrated

    rng = np.random.default_rng(0)
    z = rng.normal(size=(4000, 4))
    y = np.array([rng.choice(4, p=p) for p in softmax(z, axis=1)])
    overconfident = 3.0 * z
    t = fit_temperature(overconfident, y)
    assert t == pytest.approx(3.0, rel=0.1)
    before, after = softmax(overconfident, axis=1), softmax(overconfident / t, axis=1)
    assert expected_calibration_error(y, after) < 0.03 < 0.15 < expected_calibration_error(y, before)
    assert (after.argmax(axis=1) == before.argmax(axis=1)).all()
    np.testing.assert_allclose(uncalibrated(after, t), before, atol=1e-9)
    assert fit_temperature(np.zeros((0, 4)), np.zeros(0, dtype=int)) == 1.0


def test_a_split_without_errors_does_not_sharpen_the_answers_to_certainty() -> None:
    """16 validation records all answered right: the plain likelihood would shrink T to its bound (every
    answer ~1.0, which new records do not bear out); with the rule of succession (1/18 of each label spread
    over the classes) the answers stay short of certain."""
    import numpy as np
    from scipy.special import softmax

    from mmops.tasks.temperature import BOUNDS, fit_temperature

    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 16)
    z = rng.normal(size=(16, 4))
    z[np.arange(16), y] += 3.0  # every answer right, by a margin
    t = fit_temperature(z, y)
    assert BOUNDS[0] < t
    confidence = softmax(z / t, axis=1).max(axis=1).mean()
    assert 0.85 < confidence < 1 - (1 / 18) * (3 / 4) + 0.01  # not certain: 16 of 16 right is no proof


def test_isotonic_maps_are_chosen_only_where_they_predict_held_out_labels_better() -> None:
    """A model whose confidence says nothing beyond its sign (a step no temperature draws): isotonic maps win
    on held-out folds and are kept; a model that is only over-confident: T alone, isotonic not kept;
    a split too small to fold: T alone, no scores."""
    import numpy as np
    from scipy.special import softmax

    from mmops.evaluation import expected_calibration_error
    from mmops.tasks.isotonic import MARGIN, apply_maps, brier, choose

    rng = np.random.default_rng(2)
    s = rng.uniform(-4, 4, 600)
    z = np.column_stack([np.zeros_like(s), s])
    y = (rng.random(600) < np.where(s > 0, 0.8, 0.2)).astype(int)  # right 80 % of the time, however sure it says
    maps, scores = choose(z, y)
    assert maps is not None and scores["brier_cv_isotonic"] <= (1 - MARGIN) * scores["brier_cv_temperature"]
    fresh_s = rng.uniform(-4, 4, 4000)
    fresh_y = (rng.random(4000) < np.where(fresh_s > 0, 0.8, 0.2)).astype(int)
    fresh_z = np.column_stack([np.zeros_like(fresh_s), fresh_s])
    from mmops.tasks.temperature import fit_temperature

    by_t = softmax(fresh_z / fit_temperature(z, y), axis=1)
    by_iso = apply_maps(by_t, maps)
    np.testing.assert_allclose(by_iso.sum(axis=1), 1.0, atol=1e-6)
    assert brier(by_iso, fresh_y) < brier(by_t, fresh_y)
    assert expected_calibration_error(fresh_y, by_iso) < 0.05 < expected_calibration_error(fresh_y, by_t)

    z = rng.normal(size=(600, 3))
    y = np.array([rng.choice(3, p=p) for p in softmax(z, axis=1)])
    maps, scores = choose(3.0 * z, y)  # over-confident by a factor T undoes
    assert maps is None and scores["brier_cv_temperature"] is not None
    assert choose(z[:12], y[:12]) == (None, {"brier_cv_temperature": None, "brier_cv_isotonic": None})

    # a split answered without an error: the maps (as T) stop short of certainty, at about (n + 1) / (n + 2)
    margins = rng.uniform(5, 40, 40)
    z, y = np.column_stack([margins, np.zeros(40)]), np.zeros(40, dtype=int)
    maps, _ = choose(z, y)
    assert maps is not None  # sharper than T there, and still not certain
    top = apply_maps(softmax(z / fit_temperature(z, y), axis=1), maps)[:, 0]
    assert 0.95 < top.max() <= 1 - 1 / 42 + 1 / 84 + 1e-6


def test_the_trained_model_is_calibrated_on_validation_and_reports_both_eces(use_project: Path) -> None:
    """Training fits the temperature on the validation split (the card keeps it and the validation ECE before
    and after); evaluation reports the test ECE with and without it and draws the reliability diagram; the
    predictor applies it."""
    import numpy as np

    model_dir = use_project / "artifacts" / "industrial" / "model"
    card = json.loads((model_dir / "model_card.json").read_text())
    t = card["temperature"]
    assert 0.05 <= t <= 20 and t != 1.0
    assert card["val_metrics"]["ece"] <= card["val_metrics"]["ece_uncalibrated"] + 1e-9  # on what it was fitted to
    metrics = json.loads((use_project / "artifacts" / "industrial" / "metrics.json").read_text())
    assert metrics["temperature"] == t and 0 <= metrics["ece_uncalibrated"] <= 1
    # 16 validation records: too few to fold, so T alone (tasks/isotonic.py), and the card says so
    assert card["isotonic"] is None and metrics["isotonic"] == 0.0 and metrics["brier_cv_isotonic"] is None
    assert (use_project / "artifacts" / "industrial" / "reliability.png").stat().st_size > 1000
    predictor = Predictor.load(model_dir)
    from mmops.config import get_settings
    from mmops.datasets.tensors import load_split
    from mmops.inference import predict_batch

    rows = pipeline.load_manifest("industrial", get_settings()).split("test")[:4]
    values = load_split(predictor.pack, get_settings().data_dir, rows)
    from mmops.datasets.tensors import collate

    raw, _ = predict_batch(predictor.model, collate(predictor.pack, predictor.prep, values), "cpu")
    np.testing.assert_allclose(predictor.predict_proba(values),
                               predict_batch(predictor.model, collate(predictor.pack, predictor.prep, values), "cpu",
                                             temperature=t)[0], atol=1e-6)
    assert (predictor.predict_proba(values).argmax(axis=1) == raw.argmax(axis=1)).all()
    np.testing.assert_allclose(predictor.predict_proba(values, calibrated=False), raw, atol=1e-6)


def test_model_card_and_safetensors(use_project: Path) -> None:
    model_dir = use_project / "artifacts" / "industrial" / "model"
    card = json.loads((model_dir / "model_card.json").read_text())
    assert card["checkpoint_sha256"] == hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    assert card["classes"] == ["standing", "walking", "running", "badminton"]
    assert set(card["input_spec"]) == {"accel", "gyro"}
    assert card["dataset_version"].startswith("industrial-")
    predictor = Predictor.load(model_dir)
    assert predictor.predict_proba([]).shape == (0, 4)


def test_catalog_holds_the_lineage(use_project: Path) -> None:
    with session_scope() as s:
        for domain in ("security", "industrial"):
            assert s.scalar(select(func.count()).select_from(Sample).where(Sample.domain == domain)) > 0
            assert s.scalar(select(func.count()).select_from(Label).join(Sample).where(Sample.domain == domain)) > 0
            dv = s.scalar(select(DatasetVersion).where(DatasetVersion.domain == domain))
            run = s.scalar(select(TrainingRun).where(TrainingRun.dataset_version_id == dv.id))
            assert run.status == "finished" and run.checkpoint_sha256
            mv = s.scalar(select(ModelVersion).where(ModelVersion.training_run_id == run.id))
            assert mv.bento_model_tag.startswith(f"mmops-{domain}:") and mv.bento_tag


def test_training_is_deterministic_on_cpu(use_project: Path) -> None:
    card = use_project / "artifacts" / "security" / "model" / "model_card.json"
    before = json.loads(card.read_text())["checkpoint_sha256"]
    again = pipeline.train("security")
    assert again.checkpoint_sha256 == before


def test_evaluate_refuses_a_model_from_another_dataset(use_project: Path, tmp_path: Path) -> None:
    from mmops.errors import ValidationFailedError

    card = use_project / "artifacts" / "security" / "model" / "model_card.json"
    original = card.read_text()
    try:
        card.write_text(original.replace('"dataset_version": "security-', '"dataset_version": "other-'))
        with pytest.raises(ValidationFailedError, match="not on the current dataset"):
            pipeline.evaluate("security")
    finally:
        card.write_text(original)


def test_a_newer_build_does_not_change_the_models_drift_reference(use_project: Path) -> None:
    """Monitoring compares what a model sees with what that model learnt from: the dataset version its card
    names, not whatever `build` made since. A missing sketch is not rebuilt from the newer data either."""
    from mmops.catalog import DriftReport
    from mmops.errors import NotFoundError

    art = use_project / "artifacts" / "security"
    trained_on = json.loads((art / "model" / "model_card.json").read_text())["dataset_version"]
    manifest, sketch = art / "dataset" / "manifest.json", art / "reference_sketch.json"
    original, original_sketch = manifest.read_text(), sketch.read_bytes()
    newer = "security-" + "f" * 16  # a later build of other labeled data: a new current version
    with session_scope() as s:
        s.add(DatasetVersion(id=newer, domain="security", manifest_path=str(manifest), n_samples=1,
                             split_counts={}, validation_run_id=None))
    try:
        manifest.write_text(original.replace(f'"id": "{trained_on}"', f'"id": "{newer}"'))
        out = pipeline.monitor("security", current="test")
        assert out.reference_dataset_version == trained_on
        with session_scope() as s:
            report = s.scalars(select(DriftReport).order_by(DriftReport.id.desc())).first()
            assert report is not None and report.reference_dataset_version_id == trained_on
        sketch.unlink()
        with pytest.raises(NotFoundError, match=f"{trained_on} is no longer the current one"):
            pipeline.monitor("security", current="test")
    finally:
        manifest.write_text(original)
        sketch.write_bytes(original_sketch)
        with session_scope() as s:
            s.delete(s.get(DatasetVersion, newer))


def test_train_and_evaluate_take_the_ids_handed_to_them_not_the_latest_build(use_project: Path) -> None:
    """A training DAG run hands its build's dataset version to train and train's run to evaluate (XCom). A
    build made meanwhile (`mmops build` by hand, another run) makes a newer current version: it must not
    change what the run trains or what its model is evaluated on."""
    from mmops import orchestration
    from mmops.card import read_card
    from mmops.errors import ValidationFailedError

    art = use_project / "artifacts" / "security"
    built = pipeline.build("security")  # this run's build task
    version = built.dataset_version
    assert (art / "dataset_versions" / f"{version}.json").is_file()  # kept by id, whatever is built later
    manifest = art / "dataset" / "manifest.json"
    original = manifest.read_text()
    newer = "security-" + "e" * 16
    with session_scope() as s:
        gate = s.get(DatasetVersion, version).validation_run_id
        s.add(DatasetVersion(id=newer, domain="security", manifest_path=str(manifest), n_samples=1,
                             split_counts={}, validation_run_id=gate))
    try:
        manifest.write_text(original.replace(f'"id": "{version}"', f'"id": "{newer}"'))  # a build meanwhile
        trained = orchestration.run_stage_named("train")("security", built)  # the run's train task
        assert trained["dataset_version"] == version and read_card(art / "model").dataset_version == version
        with pytest.raises(ValidationFailedError, match="not on the current dataset"):
            pipeline.evaluate("security")  # without the id: the newest build, which this model never saw
        evaluated = orchestration.run_stage_named("evaluate")("security", trained)
        assert evaluated["macro_f1"] > 0.5
    finally:
        manifest.write_text(original)
        with session_scope() as s:
            s.delete(s.get(DatasetVersion, newer))


def test_a_model_card_is_checked_where_it_is_read(use_project: Path, tmp_path: Path) -> None:
    """The card is typed (mmops.card.ModelCard): packaging and serving refuse a card with a missing field, a
    malformed checkpoint hash or classes its pack does not have, naming the file, instead of failing later
    on a missing key."""
    import shutil

    from mmops.card import read_card
    from mmops.card.complete import read_complete
    from mmops.errors import BadInputError
    from mmops.serving.packaging import save_to_model_store

    model = tmp_path / "model"
    shutil.copytree(use_project / "artifacts" / "security" / "model", model)
    good = json.loads((model / "model_card.json").read_text())
    assert read_card(model).pack.name == "security"
    complete = read_complete(use_project / "artifacts" / "security" / "card")
    for broken, why in [({k: v for k, v in good.items() if k != "arch"}, "arch"),
                        ({**good, "checkpoint_sha256": "not-a-hash"}, "checkpoint_sha256"),
                        ({**good, "classes": ["a", "b"]}, "not its pack's")]:
        (model / "model_card.json").write_text(json.dumps(broken))
        with pytest.raises(BadInputError, match=why):
            save_to_model_store("security", model, {}, complete)
        with pytest.raises(BadInputError, match=why):
            Predictor.load(model)


def test_a_model_with_isotonic_maps_answers_through_them_and_its_evaluation_says_so(
        use_project: Path, tmp_path: Path) -> None:
    """The industrial model with maps set in its card (as training sets them where they win): the predictor
    answers through them, the uncalibrated probabilities stay the plain softmax, the task's calibration
    figures ask the model again for the ECE before, and an explanation explains the probability over T and
    says so (the maps have no gradient)."""
    import shutil

    import numpy as np

    from mmops.config import get_settings
    from mmops.datasets.tensors import load_split
    from mmops.evaluation import expected_calibration_error
    from mmops.tasks import task_of
    from mmops.tasks.isotonic import apply_maps

    model_dir = tmp_path / "model"
    shutil.copytree(use_project / "artifacts" / "industrial" / "model", model_dir)
    card = json.loads((model_dir / "model_card.json").read_text())
    k = len(card["classes"])
    maps = [[[0.0, 0.5, 1.0], [0.1, 0.2, 0.9]] for _ in range(k)]  # pulls every answer away from 0 and 1
    (model_dir / "model_card.json").write_text(json.dumps({**card, "isotonic": maps}))
    plain, mapped = Predictor.load(use_project / "artifacts" / "industrial" / "model"), Predictor.load(model_dir)
    rows = pipeline.load_manifest("industrial", get_settings()).split("test")
    values = load_split(plain.pack, get_settings().data_dir, rows)
    by_t = plain.predict_proba(values)
    got = mapped.predict_proba(values)
    np.testing.assert_allclose(got, apply_maps(by_t, tuple((tuple(x), tuple(y)) for x, y in maps)), atol=1e-6)
    assert not np.allclose(got, by_t, atol=1e-3) and np.allclose(got.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(mapped.predict_proba(values, calibrated=False),
                               plain.predict_proba(values, calibrated=False), atol=1e-6)
    task = task_of("classification")
    y = task.targets(plain.pack, rows)
    figures = task.calibration(mapped, values, y, got)
    assert figures["isotonic"] == 1.0 and figures["ece_uncalibrated"] == pytest.approx(
        expected_calibration_error(y, plain.predict_proba(values, calibrated=False)), abs=1e-6)
    (e,) = task.explain(mapped, values[:1])
    assert "before the isotonic maps" in e["explained"] and e["value"] == pytest.approx(
        float(by_t[0].max()), abs=1e-5)
    assert sum(m["shapley"] for m in e["modalities"].values()) == pytest.approx(e["value"] - e["base"], abs=1e-4)
