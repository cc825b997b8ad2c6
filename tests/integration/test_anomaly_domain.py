"""An anomaly-detection domain through the CLI stages on real data: the bundled cardiac-ecg pack (MIT-BIH,
one annotated anomalous stretch) landed, ingested, labeled, validated, built on its own time split, a
detector fitted on the normal training records only, calibrated, evaluated and registered, each `mmops`
command a process of its own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from mmops.tasks.anomaly.calibration import flagged_share_check
from tests.conftest import make_project, run_mmops
from tests.domain_run import held_out_keys, served

pytestmark = [pytest.mark.slow, pytest.mark.serve]


def _stage(root: Path, *args: str) -> dict:
    done = run_mmops(root, *args, "--json")
    assert done.returncode == 0, f"{args}: {done.stdout[-1500:]}{done.stderr[-1500:]}"
    return json.loads(done.stdout)


def test_a_detector_fitted_on_normal_ecg_flags_the_annotated_anomaly(tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj", {"cardiac": "cardiac-ecg"})
    assert run_mmops(root, "data", "pull", "--domain", "cardiac").returncode == 0
    for stage in ("ingest", "label", "validate"):
        _stage(root, stage, "--domain", "cardiac")
    built = _stage(root, "build", "--domain", "cardiac")
    trained = _stage(root, "train", "--domain", "cardiac")
    card = json.loads((root / "artifacts" / "cardiac" / "model" / "model_card.json").read_text())
    assert card["arch"]["task"] == "anomaly" and card["dataset_split_counts"]["train"] == 51
    assert card["arch"]["banks"]["ecg"]["vectors"] < 51 * 46  # a coreset of the training windows
    assert trained["val_metrics"]["fpr"] <= 0.05  # on the calibration normals themselves
    evaluated = _stage(root, "evaluate", "--domain", "cardiac")
    assert evaluated["promoted"] and evaluated["auroc"] >= 0.9, evaluated
    metrics = json.loads((root / "artifacts" / "cardiac" / "metrics.json").read_text())
    assert metrics["n"] == 42 and metrics["n_anomalous"] == 8 and metrics["recall"] >= 0.75, metrics
    for plot in ("anomaly_scores.png", "roc.png", "pr.png"):
        assert (root / "artifacts" / "cardiac" / plot).stat().st_size > 5000
    registry = _stage(root, "registry", "--domain", "cardiac")
    assert registry["versions"][0]["metrics"]["auroc"] == pytest.approx(evaluated["auroc"])

    # served: each record's score (1.0 = the threshold), the decision and the modality that drove it
    tag = _stage(root, "package", "--domain", "cardiac")["model_tag"]
    landed = root / "landing" / "cardiac"
    labels = dict(line.split(",")[:2] for line in (landed / "labels.csv").read_text().splitlines()[1:])
    keys = held_out_keys(built)
    records = [{"id": k, "inputs": {"ecg": np.loadtxt(landed / "ecg" / f"{k}.csv", delimiter=",",
                                                      skiprows=1)[:, 1:].tolist()}} for k in keys]
    with served(root, "cardiac", tag) as url:
        answer = httpx.post(f"{url}/predict", json={"records": records}, timeout=120)
        assert answer.status_code == 200, answer.text
        out = answer.json()
        assert all(a["probabilities"] is None and a["anomaly"]["driven_by"] == "ecg" for a in out), out[0]
        assert all(a["anomaly"]["threshold"] == 1.0 and a["anomaly"]["fpr"] == 0.05 for a in out)
        assert all(a["anomaly"]["is_anomaly"] == (a["anomaly"]["score"] > 1.0) for a in out)
        assert all(a["label"] == ("anomaly" if a["anomaly"]["is_anomaly"] else "normal") for a in out)
        flagged = {a["id"] for a in out if a["anomaly"]["is_anomaly"]}
        truth = {k for k in keys if labels[k] == "anomaly"}
        assert len(flagged & truth) >= 6 and len(flagged - truth) <= 3, (flagged, truth)
        spec = httpx.get(f"{url}/docs.json", timeout=30).json()
        assert "AnomalyOut" in spec["components"]["schemas"]
        # direction: a stronger fault signature raises the score. The calmest normal strip blended with the
        # most anomalous annotated one, step by step, scores higher at every step, from below the threshold
        # to above it
        by_score = sorted(out, key=lambda a: a["anomaly"]["score"])
        calm = next(np.array(r["inputs"]["ecg"]) for r in records if r["id"] == by_score[0]["id"])
        fault = next(np.array(r["inputs"]["ecg"]) for r in records if r["id"] == next(
            a["id"] for a in reversed(by_score) if labels[a["id"]] == "anomaly"))
        blends = [{"id": f"blend-{w}", "inputs": {"ecg": ((1 - w) * calm + w * fault).tolist()}}
                  for w in (0.0, 0.25, 0.5, 0.75, 1.0)]
        # (asked of /explain, whose `value` is the score: /predict would log them beside the held-out records)
        scores = [e["value"] for e in httpx.post(f"{url}/explain", json={"records": blends}, timeout=300).json()]
        assert scores == sorted(scores) and scores[0] <= 1.0 < scores[-1], scores
        # the card the bento carries: a detector's threshold calibration, and AUROC as each answer's expectation
        served_card = httpx.get(f"{url}/card", timeout=30).json()
        assert served_card["calibration"]["fpr_target"] == 0.05 and served_card["calibration"]["n_calibration_normals"] == 22
        assert out[0]["expected"]["metric"] == "auroc" and out[0]["expected"]["value"] == pytest.approx(
            served_card["metrics"]["auroc"])
        # explained: the score located in the strip (each window's distance to normal, on its threshold's scale)
        top = max(out, key=lambda a: a["anomaly"]["score"])
        record = next(r for r in records if r["id"] == top["id"])
        explained = httpx.post(f"{url}/explain", json={"records": [record]}, timeout=120)
        assert explained.status_code == 200, explained.text
        (e,) = explained.json()
        assert e["id"] == top["id"] and e["label"] is None and e["value"] == pytest.approx(top["anomaly"]["score"])
        ecg = e["modalities"]["ecg"]
        assert ecg["shapley"] == pytest.approx(e["value"], rel=1e-4)  # the one modality takes the whole score
        windows = ecg["views"]["windows"]
        assert windows["layout"] == "windows over time" and max(windows["attribution"]) == pytest.approx(
            ecg["score"], rel=1e-3)
        refused = httpx.post(f"{url}/explain", json={"records": [record], "target": "anomaly"}, timeout=30)
        assert refused.status_code == 400 and "no class to choose" in refused.json()["error"]
    done = run_mmops(root, "monitor", "--domain", "cardiac", "--hours", "0", "--json")
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
    verdict = json.loads(done.stdout)
    # the score's distribution is watched beside the inputs': the test period, with the anomaly, is not the
    # calibration period's normal rhythm
    assert verdict["n_current"] == len(records) and "anomaly_score" in verdict["drifted_columns"], verdict
    # and the flagged share against what normal rhythm alone would give, with the uncertainty of a threshold
    # calibrated on only 22 normal records: 1 in 23 expected (none of them above the threshold), and the share
    # above it not yet an alert
    calibration = card["arch"]["calibration"]
    assert calibration["n_normal"] == 22
    flagged_share = verdict["alerts"]["flagged_share"]
    assert flagged_share == flagged_share_check(len(flagged), len(records), 0.05, 22, 0.01), flagged_share
    assert flagged_share["share"] > flagged_share["expected"] == round(1 / 23, 4)

    # new records arrive unlabeled (copies of the held-out ones): the champion pre-labels them and the review
    # queue puts the flagged ones first, the most anomalous leading
    for k in keys:
        shutil.copy(landed / "ecg" / f"{k}.csv", landed / "ecg" / f"arrival_{k}.csv")
    _stage(root, "ingest", "--domain", "cardiac")
    _stage(root, "label", "--domain", "cardiac")
    pre = _stage(root, "prelabel", "--domain", "cardiac")
    assert pre["queue"]["by_method"] == {"anomaly_score": len(keys)}, pre["queue"]
    queue = _stage(root, "queue", "--domain", "cardiac", "--limit", "1000")
    assert [q["key"] for q in queue] and all(q["key"].startswith("arrival_") for q in queue)
    scores = [q["score"] for q in queue]
    assert scores == sorted(scores, reverse=True)
    flagged_first = [q["prediction"] for q in queue]
    n_flagged = flagged_first.count("anomaly")
    assert flagged_first == ["anomaly"] * n_flagged + ["normal"] * (len(queue) - n_flagged)
    assert all((q["score"] > 1.0) == (q["prediction"] == "anomaly") for q in queue)
    # the queue's flagged head is where the annotated anomaly is: as the service flagged them, so does prelabel
    assert {q["key"].removeprefix("arrival_") for q in queue[:n_flagged]} == flagged
    tasks = json.loads(Path(pre["export"]["path"]).read_text())
    assert tasks[0]["meta"]["method"] == "anomaly_score" and tasks[0]["meta"]["priority"] == scores[0]
    assert tasks[0]["predictions"][0]["result"][0]["value"]["choices"] == ["anomaly"]

    # a pack that calls itself anomaly detection without a normal class is refused, in one line
    broken = (root / "domains")
    broken.mkdir(exist_ok=True)
    yaml_text = (Path(__file__).parents[2] / "mmops" / "domains" / "cardiac.yaml").read_text()
    (broken / "cardiac.yaml").write_text(yaml_text.replace("task_options: {normal_class: normal}", ""))
    done = run_mmops(root, "train", "--domain", "cardiac")
    assert done.returncode != 0 and "needs task_options.normal_class" in done.stderr + done.stdout
