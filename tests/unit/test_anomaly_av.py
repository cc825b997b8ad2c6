"""Anomaly detection on a camera and a microphone: the watch-av pack (COMPOSED from real recordings: a real
surveillance scene, real room noise, voices and impacts; mmops/datasets/scenes.py) landed, decoded, and a
detector fitted on its normal nights only. A frozen or covered camera is normal in every single frame: only
the clip's motion view can see it. A break-in changes only the sound."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mmops.config import AnomalyParams
from mmops.domains import load_domain
from mmops.modalities import kind_of
from mmops.tasks.anomaly.features import motion_profile
from mmops.tasks.anomaly.model import AnomalyModel
from tests.landed import landed_splits


@pytest.fixture(scope="module")
def watch(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, list[dict]], dict[str, list[str]]]:
    """Per split, the decoded records (modality -> value) and their labels."""
    return landed_splits("watch-av", tmp_path_factory.mktemp("landing"))


def test_the_training_split_holds_normal_nights_only(watch) -> None:
    _, labels = watch
    assert set(labels["train"]) == {"normal"} and len(labels["train"]) == 50
    assert {"tampering", "break_in"} <= set(labels["test"]) and labels["val"].count("normal") == 25


def test_a_detector_fitted_on_normal_nights_flags_tampering_by_the_camera_and_break_ins_by_the_sound(watch,
                                                                                                     tmp_path) -> None:
    records, labels = watch
    pack = load_domain("watch")
    model = AnomalyModel.fit(pack, records["train"], AnomalyParams(coreset=1.0))
    assert set(model.banks) == {"camera", "camera:motion", "microphone"}
    model.calibrate([r for r, y in zip(records["val"], labels["val"], strict=True) if y == "normal"])
    model.save(tmp_path)  # one bank per view in the weights file
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), framework="numpy") as fh:
        assert set(fh.keys()) == {"bank.camera", "bank.camera:motion", "bank.microphone"}  # noqa: SIM118
    scored = model.score(records["test"])
    y = np.array(labels["test"])
    tampered, normal = y == "tampering", y == "normal"
    heard = (y == "break_in") & np.array(["microphone" in r for r in records["test"]])
    assert roc_auc_score(tampered[tampered | normal], scored.score[tampered | normal]) > 0.95
    assert roc_auc_score(heard[heard | normal], scored.score[heard | normal]) > 0.95
    assert {scored.driver[i] for i in np.flatnonzero(tampered & scored.is_anomaly)} == {"camera"}
    by_sound = [scored.driver[i] == "microphone" for i in np.flatnonzero(heard & scored.is_anomaly)]
    assert np.mean(by_sound) >= 0.75, by_sound  # the picture of a break-in is a normal night's
    assert scored.is_anomaly[tampered].mean() >= 0.9 and scored.is_anomaly[heard].mean() >= 0.8
    assert scored.is_anomaly[normal].mean() <= 0.2
    # the answer names modalities, never a bank: a modality scores as its most unusual view
    assert set(scored.per_modality) == {"camera", "microphone"}

    # monitoring watches each modality's score in that modality's group of columns, so that drift says which
    # one moved; the service logs the same numbers as the record's outputs
    from mmops.tasks import task_of

    task = task_of("anomaly")
    model.pack = pack
    columns, _ = task.observe(model, records["test"], list(pack.classes))
    assert {"prediction", "anomaly_score", "camera.anomaly_score", "microphone.anomaly_score"} == set(columns)
    camera = np.array(columns["camera.anomaly_score"])
    assert roc_auc_score(tampered[tampered | normal], camera[tampered | normal]) > 0.9
    lacking = [i for i, r in enumerate(records["test"]) if "microphone" not in r]
    assert lacking and all(np.isnan(columns["microphone.anomaly_score"][i]) for i in lacking)
    [raw] = task.serve(model, records["test"][lacking[0]:lacking[0] + 1], embeddings=False)
    outputs = task.answer(raw, list(pack.classes))["outputs"]
    assert set(outputs) == {"anomaly_score", "camera.anomaly_score"}  # the absent microphone is not made up


def test_a_frozen_camera_looks_normal_frame_by_frame_but_not_as_a_clip(watch) -> None:
    records, _ = watch
    spec = load_domain("watch").modality("camera")
    clip = records["train"][0]["camera"]
    frames = kind_of(spec).tensor(clip, spec, {}, {})
    frozen = np.repeat(frames[:1], len(frames), axis=0)
    moving, still = motion_profile(frames, len(frames)), motion_profile(frozen, len(frozen))
    assert still[0, 0] == pytest.approx(np.log(1e-4)) and moving[0, 0] > still[0, 0] + 3  # log change
    assert still[0, 3] == pytest.approx(frames[0].mean(), rel=1e-4)  # the same brightness as its frame

