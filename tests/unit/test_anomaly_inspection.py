"""Surface inspection fitted on normal crops only: the inspection-brick pack (COMPOSED: real gravel or grass
pasted into crops of a real brick wall; mmops/datasets/surfaces.py), landed and decoded. The detector must
flag the pasted material, not the pasting: a square of the wall itself pasted the same way is mostly normal."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mmops.config import AnomalyParams
from mmops.datasets.surfaces import PLACES, SIDE, crop, paste, photo
from mmops.domains import load_domain
from mmops.tasks.anomaly.model import AnomalyModel
from tests.landed import landed_splits


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[AnomalyModel, dict, dict]:
    records, labels = landed_splits("inspection-brick", tmp_path_factory.mktemp("landing"))
    model = AnomalyModel.fit(load_domain("inspection"), records["train"], AnomalyParams())
    model.calibrate([r for r, y in zip(records["val"], labels["val"], strict=True) if y == "normal"])
    return model, records, labels


def test_splits_come_from_parts_of_the_wall_no_other_split_saw(fitted) -> None:
    _, records, labels = fitted
    assert set(labels["train"]) == {"normal"} and len(labels["train"]) == 60
    assert {"inclusion", "growth"} <= set(labels["test"])
    mask = {split: np.zeros((512, 512), bool) for split in PLACES}
    for split, rects in PLACES.items():
        for (r0, r1), (c0, c1) in rects:
            assert r1 - r0 >= SIDE and c1 - c0 >= SIDE  # a crop fits
            mask[split][r0:r1, c0:c1] = True
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not (mask[a] & mask[b]).any(), (a, b)  # no pixel in two splits


def test_defects_are_flagged_and_named_at_the_calibrated_rate(fitted) -> None:
    model, records, labels = fitted
    scored = model.score(records["test"])
    y = np.array(labels["test"])
    assert roc_auc_score(y != "normal", scored.score) > 0.95
    for defect in ("inclusion", "growth"):
        assert scored.is_anomaly[y == defect].mean() >= 0.7, defect
    assert scored.is_anomaly[y == "normal"].mean() <= 0.15
    assert set(scored.driver) == {"surface"}


def test_the_detector_flags_the_material_not_the_paste(fitted) -> None:
    model, records, labels = fitted
    rng = np.random.default_rng(5)
    wall = photo("brick.png")
    own = [{"surface": paste(crop(wall, PLACES["test"], rng), wall[:256, :256], rng)[:, :, None]}
           for _ in range(30)]
    gravel = [{"surface": paste(crop(wall, PLACES["test"], rng), photo("gravel.png"), rng)[:, :, None]}
              for _ in range(30)]
    flagged_own, flagged_gravel = model.score(own).is_anomaly.mean(), model.score(gravel).is_anomaly.mean()
    assert flagged_own <= 0.25 and flagged_gravel >= flagged_own + 0.5, (flagged_own, flagged_gravel)
