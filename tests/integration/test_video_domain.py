"""The video kind through every stage: camera tampering on a real surveillance scene (opencv-doc's vtest.avi,
Apache-2.0/BSD-3). Clips are 4 s windows of it; a tampered clip is the same window frozen on one frame (a
replayed still) or covered (the lens blocked: dark and flat). Each `mmops` command runs as a process of its
own, then a real `bentoml serve` answers clips over HTTP, naming the frames it used."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import pytest

from mmops.datasets import scenes
from mmops.modalities.video.decode import encode_clip
from tests.conftest import FAST_TRAIN
from tests.domain_run import drift_after_shift, held_out_keys, project_with_pack, run_stages, served

pytestmark = [pytest.mark.serve, pytest.mark.slow]

PACK = {
    "name": "camera_watch",
    "description": "Camera tampering on a real surveillance scene (composed from opencv-doc's vtest.avi, "
                   "Apache-2.0/BSD-3): a normal clip vs one frozen on a still or with the lens covered",
    "classes": ["normal", "tampered"],
    "modalities": [{"name": "cam", "kind": "video", "fps": 2.0, "frames": 8, "size": [48, 64], "required": True}],
    "card": {"intended_users": "Security engineers testing a tampering detector",
             "sources": [{"name": "vtest.avi (opencv-doc)", "license": "Apache-2.0/BSD-3"}], "composed": True,
             "limitations": ["tampering is simulated on one real scene"]},
}


def _land(root: Path, per_class: int = 12) -> dict[str, str]:
    rng = np.random.default_rng(0)
    frames = scenes.scene_frames()
    folder = root / "landing" / "camera_watch" / "cam"
    folder.mkdir(parents=True)
    labels = {}
    for i in range(2 * per_class):
        label = ("normal", "tampered")[i % 2]
        clip = scenes.window(frames, label == "tampered", rng)  # 4 s of the scene; frozen or covered if tampered
        key = f"c{i:03d}"
        (folder / f"{key}.mp4").write_bytes(encode_clip(clip, scenes.SOURCE_FPS))
        labels[key] = label
    (folder / "c999.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)  # an MP4 with nothing inside
    (root / "landing" / "camera_watch" / "labels.csv").write_text(
        "sample_id,label\n" + "".join(f"{k},{v}\n" for k, v in labels.items()))
    return labels


def test_a_video_domain_goes_from_landing_to_a_served_prediction(tmp_path: Path) -> None:
    # the frame backbone stays frozen (ImageNet features): the epochs are cheap, and the head needs some
    root = project_with_pack(tmp_path, PACK, {**FAST_TRAIN, "epochs": 20, "batch_size": 8})
    labels = _land(root)

    results = run_stages(root, "camera_watch")
    assert results["ingest"]["ingested"] == len(labels) and results["ingest"]["quarantined"] == 1
    assert "c999.mp4" in str(results["ingest"]["reasons"])
    assert results["evaluate"]["macro_f1"] >= 0.75, results["evaluate"]

    folder = root / "landing" / "camera_watch" / "cam"
    with served(root, "camera_watch", results["package"]["model_tag"]) as url:
        records = [{"id": k, "inputs": {"cam": base64.b64encode((folder / f"{k}.mp4").read_bytes()).decode()}}
                   for k in held_out_keys(results["build"])]
        answer = httpx.post(f"{url}/predict", json={"records": records}, timeout=120)
        assert answer.status_code == 200, answer.text
        right = sum(p["label"] == labels[p["id"]] for p in answer.json())
        assert right >= 0.75 * len(records), answer.json()
        assert answer.json()[0]["warnings"] == ["cam: frames at 0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5 s of 4.0 s"]
        bad = httpx.post(f"{url}/predict", json={"records": [{"inputs": {
            "cam": base64.b64encode(b"%PDF-1.4 " * 40).decode()}}]}, timeout=60)
        assert bad.status_code == 400 and "not a readable video file" in bad.text, bad.text

        # the field's camera changes (darker, softer): the monitor sees the camera drift
        verdict = drift_after_shift(root, url, "camera_watch", [
            {"id": k, "inputs": {"cam": base64.b64encode((folder / f"{k}.mp4").read_bytes()).decode()}}
            for k in labels])
    assert verdict["drifted"] and verdict["drifted_groups"] == ["cam"], verdict
    assert {"cam.brightness", "cam.blur"} <= set(verdict["drifted_columns"]), verdict
    assert not {"cam.fps", "cam.frame_count", "cam.width"} & set(verdict["drifted_columns"]), verdict  # only the picture
