"""The field shifts the drift demo sends change what they claim to, and stay valid requests."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

from mmops.domains import load_domain
from mmops.modalities import decode
from mmops.modalities.image import shift_image
from mmops.modalities.sensor import shift_sensor
from mmops.modalities.text import shift_text
from mmops.serving.schemas import RecordIn, decode_record
from mmops.shifts import shift_record


def _png(arr: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_each_shift_changes_what_it_claims_and_stays_a_valid_record() -> None:
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(100, 3)).tolist()
    shifted = np.asarray(shift_sensor(rows))
    assert shifted.mean() == pytest.approx(3 * np.mean(rows) + 2) and shifted.std() == pytest.approx(3 * np.std(rows))

    img = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    spec = load_domain("security").modality("camera")
    before = decode(base64.b64decode(_png(img)), spec).stats
    after = decode(base64.b64decode(shift_image(_png(img))), spec).stats
    assert after["brightness"] < 0.6 * before["brightness"] and after["sharpness"] < before["sharpness"]

    text = "No acute disease. Heart size within normal limits. Lungs clear."
    out = shift_text(text)
    assert "Neg acute/emergent dz" in out and "wnl" in out and out.startswith("Dictated")

    pack = load_domain("industrial")
    record = {"id": "r1", "inputs": {"accel": rows, "gyro": rows}}
    moved = shift_record(pack, record)
    assert moved["id"] == "shifted-r1" and moved["inputs"]["accel"] != rows
    values, _ = decode_record(pack, RecordIn.model_validate(moved))  # still a request the service accepts
    assert set(values) == {"accel", "gyro"}
