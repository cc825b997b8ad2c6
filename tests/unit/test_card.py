"""The complete model card: what makes it incomplete (named), the subsets it must measure, the expected
figures an answer carries, its renderings, and the bundled packs' declared users, sources and licences."""

from __future__ import annotations

from typing import Any

import pytest

from mmops.card.complete import (
    Approval,
    CompleteCard,
    SubsetMetrics,
    TrainingData,
    modality_subsets,
    raw_files_digest,
)
from mmops.card.render import to_html, to_markdown
from mmops.datasets.packs import PACKS
from mmops.domains import Source, available_domains, load_domain
from mmops.errors import ValidationFailedError

CALIBRATION = ("temperature", "ece", "ece_uncalibrated")


def _card(**change: Any) -> CompleteCard:
    mods = ("accel", "gyro")
    fields: dict[str, Any] = dict(
        domain="industrial", task="classification", classes=("a", "b"), modalities=mods, checkpoint_sha256="0" * 64,
        mmops_version="0", model_version=3, intended_use="activity", intended_users="plant engineers",
        training_data=TrainingData(dataset_version="v1", split_counts={"train": 8, "val": 2, "test": 4}, raw_files=28,
                                   raw_files_sha256="1" * 64, sources=(Source(name="BasicMotions", license="BSD-3"),),
                                   non_commercial=False, composed=False),
        metrics={"accuracy": 0.9}, per_class={"a": {"f1": 0.9}, "b": {"f1": 0.8}},
        subsets=tuple(SubsetMetrics(modalities=s, n=4, metrics={"accuracy": 0.5 + 0.1 * len(s)})
                      for s in modality_subsets(list(mods))),
        calibration={"temperature": 1.3, "isotonic": 0.0, "ece": 0.05, "ece_uncalibrated": 0.09}, limitations=(),
        approval=Approval(decision="promoted", by="mmops evaluate", at="2026-12-06T00:00:00+00:00", reason="first"))
    return CompleteCard(**{**fields, **change})


def test_a_complete_card_misses_nothing_and_answers_the_expected_figures_for_a_subset() -> None:
    card = _card()
    assert card.missing(CALIBRATION) == []
    card.require_complete(CALIBRATION, "test")
    assert card.expected(["gyro"], "accuracy") == {"modalities": ["gyro"], "metric": "accuracy", "value": 0.6, "n": 4}
    # the order the record brought them in does not matter: the pack's order names the subset
    assert card.expected(["gyro", "accel"], "accuracy")["value"] == pytest.approx(0.7)
    assert card.expected([], "accuracy") is None


def test_each_missing_field_is_named_with_where_it_comes_from() -> None:
    data = _card().training_data.model_copy(update={"sources": (), "composed": True})
    card = _card(intended_users=" ", training_data=data, subsets=_card().subsets[:2], approval=None,
                 calibration={"temperature": 1.0, "ece": None})
    gaps = card.missing(CALIBRATION)
    named = [g.split(" ")[0] for g in gaps]
    assert named == ["intended_users", "training_data.sources", "limitations", "subsets", "calibration", "approval"]
    assert "ece, ece_uncalibrated" in gaps[4] and "3 non-empty subsets" in gaps[3]
    with pytest.raises(ValidationFailedError, match="mmops package: the model card of industrial .* incomplete"):
        card.require_complete(CALIBRATION, "mmops package")


def test_every_non_empty_subset_once() -> None:
    subsets = modality_subsets(["report", "ecg", "fundus"])
    assert len(subsets) == 2**3 - 1 == len(set(subsets))
    assert subsets[:3] == [("report",), ("ecg",), ("fundus",)] and subsets[-1] == ("report", "ecg", "fundus")


def test_the_raw_file_digest_is_of_the_files_not_their_order() -> None:
    rows = [{"key": "k1", "files": {"a": {"sha256": "x"}, "b": {"sha256": "y"}}}, {"key": "k2", "files": {
        "a": {"sha256": "z"}}}]
    n, digest = raw_files_digest(rows)
    assert n == 3 and raw_files_digest(rows[::-1]) == (n, digest)
    rows[1]["files"]["a"]["sha256"] = "w"
    assert raw_files_digest(rows)[1] != digest


def test_the_renderings_hold_every_section_and_escape_what_they_show() -> None:
    data = _card().training_data.model_copy(update={
        "sources": (Source(name="reports <b>", license="CC BY-NC-ND 4.0"),), "non_commercial": True, "composed": True})
    card = _card(training_data=data, limitations=("pairing is synthetic <script>",))
    md = to_markdown(card)
    for section in ("Intended use", "Training data", "Per class", "Given only some modalities", "Calibration",
                    "Known limitations", "Approval"):
        assert f"## {section}" in md
    assert "| accel+gyro | 4 | 0.700 |" in md and "NON-COMMERCIAL" in md and "COMPOSED" in md
    assert "(non-commercial use only)" in md
    assert "(not measured" in md and "- isotonic maps after the temperature: no" in md  # a card evaluated before behaviour was measured says so
    page = to_html(card)
    assert "<script>" not in page and "&lt;script&gt;" in page and "reports &lt;b&gt;" in page


def test_the_behaviour_section_says_what_was_nudged_and_whether_the_score_rises() -> None:
    from mmops.behaviour import Behaviour

    measured = Behaviour(n=4, invariance={"accel": 1.0, "gyro": 0.75}, nudges={"accel": "gain", "gyro": "gain"},
                         shift_kept=0.5, clear_cases=6, clear_right=5)
    md = to_markdown(_card(behaviour=measured))
    assert "- gyro, gain: 0.750 of 4 answers kept" in md and "answered right: 5 of 6" in md
    rising = Behaviour(n=4, invariance={}, nudges={}, shift_kept=None, direction=(0.2, 0.5, 1.4))
    falling = rising.model_copy(update={"direction": (0.2, 0.9, 0.7)})
    assert rising.direction_holds and not falling.direction_holds
    assert "0.200 -> 0.500 -> 1.400 (rising at every step" in to_markdown(_card(task="anomaly", behaviour=rising))
    assert "NOT rising" in to_markdown(_card(task="anomaly", behaviour=falling))


@pytest.mark.parametrize("licence,nc", [("CC BY-NC-ND 4.0", True), ("CC BY-NC 4.0", True), ("non-commercial", True),
                                        ("ODC-By 1.0", False), ("BSD-3", False), ("LGPL", False)])
def test_non_commercial_licences_are_flagged(licence: str, nc: bool) -> None:
    assert Source(name="s", license=licence).non_commercial is nc


def test_every_bundled_domain_declares_its_cards_users_and_sources() -> None:
    bundled = [d for d, path in available_domains().items() if "mmops/domains" in str(path)]
    assert len(bundled) >= 7
    for name in bundled:
        facts = load_domain(name).card
        assert facts.intended_users and facts.sources, name
        assert not facts.composed or facts.limitations, f"{name}: a composed pack says how"
    assert load_domain("medical").card.non_commercial and not load_domain("industrial").card.non_commercial
    # `mmops data list` shows the same licences, from the same place
    assert PACKS["medical-cxr"].license == load_domain("medical").card.licence_line()
    assert "CC BY-NC-ND 4.0 (non-commercial use only)" in PACKS["medical-cxr"].license
