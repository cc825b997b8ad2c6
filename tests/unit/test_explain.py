"""Explanations (mmops.explain): exact Shapley values over modalities, integrated gradients that are complete
and that depend on what the model learnt, a modality the model ignores getting nothing, text explained token
by token, and an anomaly detector's score shared out and located."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mmops.datasets.tensors import Preprocessor
from mmops.domains import DomainPack, load_domain
from mmops.errors import BadInputError
from mmops.explain import explain_record
from mmops.explain.shapley import coalitions, shapley_values
from mmops.inference import Predictor
from mmops.models import FUSIONS, build_model

ARCH = {"embed_dim": 16, "image_encoder": "resnet", "sensor_encoder": "cnn_gru", "text_encoder": "hashed"}


def _medical(fusion: str = "attention") -> tuple[Predictor, dict]:
    pack = load_domain("medical")
    torch.manual_seed(0)
    model = build_model(pack, {**ARCH, "fusion": fusion}).eval()
    rng = np.random.default_rng(0)
    value = {"report": "Heart size normal. No pleural effusion or pneumothorax.",
             "ecg": rng.normal(size=(180, 1)).astype("float32"),
             "fundus": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)}
    return Predictor(pack, None, model, Preprocessor(), "cpu"), value  # type: ignore[arg-type]


def test_shapley_values_match_their_definition() -> None:
    """A game with known values, and a random game of 4 players against the average over all orders."""
    subsets = coalitions(3)
    assert subsets.shape == (8, 3) and subsets[0].sum() == 0 and subsets[-1].sum() == 3
    weights = np.array([0.1, 0.5, -0.2])
    game = subsets @ weights + 0.3 * subsets[:, 0] * subsets[:, 2]  # players 0 and 2 together earn 0.3 more
    np.testing.assert_allclose(shapley_values(game, subsets), [0.25, 0.5, -0.05], atol=1e-7)  # float32 masks

    subsets = coalitions(4)
    worth = dict(zip((tuple(r.astype(int)) for r in subsets), np.random.default_rng(1).normal(size=16),
                     strict=True))
    values = np.array([worth[tuple(r.astype(int))] for r in subsets])
    by_order = np.zeros(4)
    for order in itertools.permutations(range(4)):
        have = [0, 0, 0, 0]
        for player in order:
            before = worth[tuple(have)]
            have[player] = 1
            by_order[player] += worth[tuple(have)] - before
    np.testing.assert_allclose(shapley_values(values, subsets), by_order / math.factorial(4), atol=1e-12)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_a_records_modalities_share_its_answer_above_what_the_model_says_without_them(fusion: str) -> None:
    predictor, value = _medical(fusion)
    probs = predictor.predict([value])[0][0]
    e = explain_record(predictor, value)
    assert e["label"] == predictor.pack.classes[int(np.argmax(probs))]
    assert e["value"] == pytest.approx(float(probs.max()), abs=1e-5)
    assert sum(d["shapley"] for d in e["modalities"].values()) == pytest.approx(e["value"] - e["base"], abs=1e-5)

    partial = {k: v for k, v in value.items() if k != "fundus"}  # a record without its image
    e = explain_record(predictor, partial, maps=False)
    assert set(e["modalities"]) == {"report", "ecg"}
    assert sum(d["shapley"] for d in e["modalities"].values()) == pytest.approx(e["value"] - e["base"], abs=1e-5)

    other = next(c for c in predictor.pack.classes if c != e["label"])
    chosen = explain_record(predictor, value, target=other, maps=False)
    assert chosen["label"] == other
    assert chosen["value"] == pytest.approx(float(probs[predictor.pack.classes.index(other)]), abs=1e-5)


def test_what_cannot_be_explained_is_a_clear_error() -> None:
    predictor, value = _medical()
    with pytest.raises(BadInputError, match="not one of the model's classes"):
        explain_record(predictor, value, target="cat")
    with pytest.raises(BadInputError, match="none of medical's modalities"):
        explain_record(predictor, {})


def test_text_is_explained_token_by_token_as_the_model_read_it() -> None:
    """Each token's attribution is the probability lost without it (the hashed encoder reads a bag of
    tokens, so the record without token j is the text without word j)."""
    predictor, value = _medical()
    e = explain_record(predictor, value)
    report = e["modalities"]["report"]
    words = ["heart", "size", "normal", "no", "pleural", "effusion", "or", "pneumothorax"]
    assert report["method"] == "occlusion" and report["units"] == words
    label = predictor.pack.classes.index(e["label"])
    for j in (0, 5):
        without = {**value, "report": " ".join(w for i, w in enumerate(words) if i != j)}
        expected = e["value"] - float(predictor.predict([without])[0][0][label])
        assert report["attribution"][j] == pytest.approx(expected, abs=1e-5)


def test_integrated_gradients_are_complete_on_the_trained_models(use_project: Path) -> None:
    """Completeness: each map sums to f(input) - f(baseline) within 1 % (of the gap, or of 0.01 where the gap
    is smaller), on real held-out records of a sensor model and an image model."""
    from mmops import pipeline
    from mmops.config import get_settings
    from mmops.datasets.tensors import load_split

    for domain in ("industrial", "security"):
        predictor = Predictor.load(use_project / "artifacts" / domain / "model", "cpu")
        rows = pipeline.load_manifest(domain, get_settings()).split("test")[:3]
        for value in load_split(predictor.pack, get_settings().data_dir, rows):
            e = explain_record(predictor, value)
            for m, d in e["modalities"].items():
                assert d["method"] == "integrated_gradients", m
                gap = d["prediction_gap"]
                assert abs(d["total"] - gap) <= 0.01 * max(abs(gap), 0.01) + 1e-6, (domain, m, d["total"], gap)
                assert d["completeness_error"] <= 0.01
                assert np.asarray(d["attribution"]).sum() == pytest.approx(d["total"], abs=1e-4)
                if predictor.pack.modality(m).kind == "image":
                    assert np.asarray(d["grad_cam"]).shape == np.asarray(d["attribution"]).shape


def test_maps_change_when_the_weights_are_randomised(use_project: Path) -> None:
    """The model-randomisation check (Adebayo et al., 2018): the image model's maps with its trained weights
    and with every weight re-drawn rank the pixels unrelatedly (an explanation that did not would explain the
    input, not the model), while a copy whose weights barely move keeps them. Signed maps: the magnitudes keep
    a rank correlation near 0.4, as gradient x input does in that paper (the input's edges show in both)."""
    from scipy.stats import spearmanr

    from mmops import pipeline
    from mmops.config import get_settings
    from mmops.datasets.tensors import load_split

    model_dir = use_project / "artifacts" / "security" / "model"
    trained = Predictor.load(model_dir, "cpu")
    rows = pipeline.load_manifest("security", get_settings()).split("test")[:3]
    values = load_split(trained.pack, get_settings().data_dir, rows)
    randomised, nudged = Predictor.load(model_dir, "cpu"), Predictor.load(model_dir, "cpu")
    torch.manual_seed(1)
    for module in randomised.model.modules():
        if hasattr(module, "reset_parameters") and module is not randomised.model:
            module.reset_parameters()  # type: ignore[operator]
    with torch.no_grad():
        for p in nudged.model.parameters():
            p.add_(1e-4 * torch.randn_like(p))

    def camera(predictor: Predictor, value: dict) -> np.ndarray:
        return np.asarray(explain_record(predictor, value)["modalities"]["camera"]["attribution"]).ravel()

    maps = [camera(trained, v) for v in values]
    unrelated = [spearmanr(m, camera(randomised, v)).statistic for m, v in zip(maps, values, strict=True)]
    kept = [spearmanr(m, camera(nudged, v)).statistic for m, v in zip(maps, values, strict=True)]
    assert abs(np.mean(unrelated)) < 0.2, unrelated
    assert np.mean(kept) > 0.9, kept


def test_a_modality_the_model_ignores_gets_a_shapley_value_near_zero() -> None:
    """Trained on records whose class is in one sensor's frequency while the other holds noise, the model
    answers from the first: the noise sensor's Shapley values are near zero beside the signal's."""
    pack = DomainPack.model_validate({
        "name": "toy", "description": "signal and noise", "classes": ["slow", "fast"],
        "modalities": [{"name": "signal", "kind": "sensor", "channels": ["x"], "length": 64, "sample_rate_hz": 32},
                       {"name": "noise", "kind": "sensor", "channels": ["x"], "length": 64, "sample_rate_hz": 32}]})
    rng = np.random.default_rng(0)
    t = np.arange(64)

    def record(fast: bool) -> dict:
        freq = rng.uniform(0.25, 0.35) if fast else rng.uniform(0.05, 0.1)
        wave = np.sin(freq * t + rng.uniform(0, 6)) + 0.1 * rng.normal(size=64)
        return {"signal": wave[:, None].astype("float32"), "noise": rng.normal(size=(64, 1)).astype("float32")}

    labels = rng.integers(0, 2, 256)
    values = [record(bool(y)) for y in labels]
    torch.manual_seed(0)
    model = build_model(pack, {**ARCH, "sensor_encoder": "cnn", "fusion": "concat", "embed_dim": 8,
                                "modality_dropout": 0.3})  # as training does: it learns records that lack one
    predictor = Predictor(pack, None, model, Preprocessor(), "cpu")  # type: ignore[arg-type]
    from mmops.datasets.tensors import collate
    from mmops.inference import to_device

    batch = collate(pack, Preprocessor(), values, labels.tolist())
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for step in range(60):
        idx = np.random.default_rng(step).choice(len(values), 64, replace=False)
        inputs, masks, lengths, _, y = to_device(batch, idx, "cpu")
        model.train()
        loss = torch.nn.functional.cross_entropy(model(inputs, masks, lengths), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    test = [record(bool(y)) for y in (0, 1) * 5]
    assert (predictor.predict(test)[0].argmax(axis=1) == [0, 1] * 5).mean() >= 0.9
    phi = [explain_record(predictor, v, maps=False)["modalities"] for v in test]
    signal = np.mean([abs(p["signal"]["shapley"]) for p in phi])
    noise = np.mean([abs(p["noise"]["shapley"]) for p in phi])
    assert noise < 0.1 * signal, (noise, signal)


def test_an_anomaly_score_is_shared_out_and_located() -> None:
    """A detector's score is the largest of its modalities' scores: one unusual modality takes the whole
    score; inside it, the window furthest from normal is the score, where the fault is."""
    from mmops.config import AnomalyParams
    from mmops.tasks.anomaly.explain import explain_scores
    from mmops.tasks.anomaly.model import AnomalyModel

    pack = DomainPack.model_validate({
        "name": "vib", "description": "vibration", "classes": ["normal", "anomaly"], "task": "anomaly",
        "task_options": {"normal_class": "normal"},
        "modalities": [{"name": "a", "kind": "sensor", "channels": ["x"], "length": 200, "sample_rate_hz": 50},
                       {"name": "b", "kind": "sensor", "channels": ["x"], "length": 200, "sample_rate_hz": 50}]})
    rng = np.random.default_rng(0)
    t = np.arange(200)

    def wave() -> np.ndarray:
        return (np.sin(0.3 * t + rng.uniform(0, 6)) + 0.05 * rng.normal(size=200))[:, None].astype("float32")

    model = AnomalyModel.fit(pack, [{"a": wave(), "b": wave()} for _ in range(40)], AnomalyParams())
    model.calibrate([{"a": wave(), "b": wave()} for _ in range(40)])
    faulty = wave()
    faulty[150:160] += 3.0  # a knock in sensor a
    (e,) = explain_scores(model, [{"a": faulty, "b": wave()}])
    assert e["value"] > 1.0 and e["base"] == 0.0
    a, b = e["modalities"]["a"], e["modalities"]["b"]
    assert a["score"] > 5 * b["score"]  # each on its own threshold's scale (1.0)
    assert a["shapley"] + b["shapley"] == pytest.approx(e["value"], rel=1e-5)
    assert a["shapley"] > 0.5 * e["value"] > b["shapley"]
    windows = np.asarray(a["views"]["windows"]["attribution"])
    assert a["views"]["windows"]["layout"] == "windows over time"
    assert windows.max() == pytest.approx(a["score"], rel=1e-4)
    peak = int(np.argmax(windows)) / (len(windows) - 1)  # where along the record the furthest window is
    assert 0.5 < peak < 0.95
    with pytest.raises(BadInputError, match="no class to choose"):
        explain_scores(model, [{"a": faulty}], target="anomaly")
