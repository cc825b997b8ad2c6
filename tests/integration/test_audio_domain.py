"""The audio kind through every stage, fused with a sensor: clips composed from real recordings (alsa-utils'
spoken phrases and noise, GPL-2; pygame's impact sounds, LGPL) as Scaper composes URBAN-SED, each `mmops`
command a process of its own, then a real `bentoml serve` answers audio records over HTTP."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from mmops.datasets import scenes
from mmops.datasets.sources import debian_file
from mmops.modalities.sensor import sensor_csv_bytes
from tests.domain_run import drift_after_shift, held_out_keys, project_with_pack, run_stages, served

pytestmark = [pytest.mark.serve, pytest.mark.slow]

RATE, SECONDS = 16_000, 2.0
PACK = {
    "name": "plant_sound",
    "description": "A machine's microphone and vibration: a voice (an operator) vs an impact (composed from real "
                   "recordings: alsa-utils GPL-2, pygame LGPL)",
    "classes": ["voice", "impact"],
    "modalities": [
        {"name": "mic", "kind": "audio", "sample_rate_hz": RATE, "clip_seconds": SECONDS, "required": True},
        {"name": "vib", "kind": "sensor", "channels": ["z"], "length": 100, "sample_rate_hz": 50.0},
    ],
    "card": {"intended_users": "Maintenance engineers testing a machine-sound classifier",
             "sources": [{"name": "alsa-utils recordings", "license": "GPL-2"},
                         {"name": "pygame example sounds", "license": "LGPL"}], "composed": True,
             "limitations": ["the vibration channel is synthetic: it is not recorded with the sound"]},
}

def _compose(event: np.ndarray, background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The event at a random offset and a random event-to-background ratio (6 to 12 dB) over a random stretch
    of the background, at the clip's length."""
    n = int(RATE * SECONDS)
    start = rng.integers(0, len(background) - n)
    clip = background[start:start + n].astype(np.float64).copy()
    event = event[:n]
    at = rng.integers(0, n - len(event) + 1)
    snr = rng.uniform(6, 12)
    gain = np.sqrt(np.mean(clip**2) * 10 ** (snr / 10) / max(np.mean(event**2), 1e-12))
    clip[at:at + len(event)] += gain * event
    return (clip / max(1.0, np.abs(clip).max() / 0.9)).astype(np.float32)


def _land(root: Path, per_class: int = 20) -> dict[str, str]:
    rng = np.random.default_rng(0)
    # the surveillance pack's recordings (alsa-utils' noise and phrases, pygame's impacts), in 2 s clips here
    noise = scenes.load_sound(debian_file("alsa-utils", f"{scenes.ALSA}/Noise.wav").read_bytes())
    background = np.tile(noise, int(np.ceil(RATE * SECONDS * 3 / len(noise))))
    _, voices, impacts = scenes.sounds()
    events = {"voice": voices, "impact": impacts}
    (root / "landing" / "plant_sound" / "mic").mkdir(parents=True)
    (root / "landing" / "plant_sound" / "vib").mkdir(parents=True)
    labels = {}
    for i in range(2 * per_class):
        label = ("voice", "impact")[i % 2]
        clip = _compose(events[label][i // 2 % len(events[label])], background, rng)
        fmt = ("WAV", ".wav") if i % 3 else ("FLAC", ".flac")
        buf = io.BytesIO()
        sf.write(buf, clip, RATE, format=fmt[0])
        key = f"r{i:03d}"
        (root / "landing" / "plant_sound" / "mic" / f"{key}{fmt[1]}").write_bytes(buf.getvalue())
        vib = rng.normal(0.0, 1.0 if label == "voice" else 1.3, (100, 1))  # an impact shakes the machine a bit
        (root / "landing" / "plant_sound" / "vib" / f"{key}.csv").write_bytes(sensor_csv_bytes(vib, ["z"], 50.0))
        labels[key] = label
    (root / "landing" / "plant_sound" / "mic" / "r999.wav").write_bytes(b"%PDF-1.4 " * 50)  # not audio
    (root / "landing" / "plant_sound" / "labels.csv").write_text(
        "sample_id,label\n" + "".join(f"{k},{v}\n" for k, v in labels.items()))
    return labels


def test_an_audio_domain_goes_from_landing_to_a_served_prediction(tmp_path: Path) -> None:
    root = project_with_pack(tmp_path, PACK)
    labels = _land(root)

    results = run_stages(root, "plant_sound")
    assert results["ingest"]["ingested"] == 2 * len(labels) and results["ingest"]["quarantined"] == 1
    assert "not a readable audio file" in str(results["ingest"]["reasons"])
    assert results["evaluate"]["macro_f1"] >= 0.75, results["evaluate"]
    metrics = json.loads((root / "artifacts" / "plant_sound" / "metrics.json").read_text())
    assert metrics["single_modality"]["mic"]["auroc"] >= 0.8, metrics["single_modality"]  # audio alone ranks

    landed = root / "landing" / "plant_sound"
    with served(root, "plant_sound", results["package"]["model_tag"]) as url:
        spec = httpx.get(f"{url}/docs.json", timeout=30).json()
        assert spec["components"]["schemas"]["RecordIn"]["properties"]["inputs"]["properties"]["mic"]["format"] \
            == "byte"
        records = [{"id": k, "inputs": {
            "mic": base64.b64encode(next((landed / "mic").glob(f"{k}.*")).read_bytes()).decode(),
            "vib": np.loadtxt(landed / "vib" / f"{k}.csv", delimiter=",", skiprows=1)[:, 1:].tolist()}}
            for k in held_out_keys(results["build"])]
        answer = httpx.post(f"{url}/predict", json={"records": records}, timeout=120)
        assert answer.status_code == 200, answer.text
        right = sum(p["label"] == labels[p["id"]] for p in answer.json())
        assert right >= 0.75 * len(records), answer.json()
        bad = httpx.post(f"{url}/predict", json={"records": [{"inputs": {
            "mic": base64.b64encode(b"RIFF not really a wave file").decode()}}]}, timeout=60)
        assert bad.status_code == 400 and "not a readable audio file" in bad.text, bad.text

        # the field changes (the mic duller, quieter, noisier; the vibration sensor miscalibrated): both drift
        everyone = [{"id": k, "inputs": {
            "mic": base64.b64encode(next((landed / "mic").glob(f"{k}.*")).read_bytes()).decode(),
            "vib": np.loadtxt(landed / "vib" / f"{k}.csv", delimiter=",", skiprows=1)[:, 1:].tolist()}}
            for k in labels]
        verdict = drift_after_shift(root, url, "plant_sound", everyone)
    assert verdict["drifted"] and verdict["drifted_groups"] == ["mic", "vib"], verdict
    assert {"mic.rms_dbfs", "mic.spectral_centroid_hz"} <= set(verdict["drifted_columns"]), verdict
    assert "mic" in verdict["drifted_embeddings"], verdict  # and what the model makes of it
