"""What goes wrong in the field, applied to a domain's request payloads: the drift demo sends these, and
tests check that monitoring notices them.

- sensors: a miscalibrated or replaced sensor (gain and offset on every channel);
- images: a darker site and a defocused lens (brightness down, Gaussian blur);
- text: another site's reporting vocabulary (abbreviations and boilerplate instead of the usual words).

Each takes and returns the JSON value `/predict` takes for the modality (`schemas.file_to_wire`).
"""

from __future__ import annotations

import base64
import io
import re
from typing import Any

import numpy as np

from mmops.domains import DomainPack, ImageSpec, SensorSpec

# another site's habits: what a radiologist elsewhere writes instead
_VOCABULARY = {
    "no": "neg", "normal": "wnl", "heart": "cardiac silhouette", "lungs": "lung fields", "clear": "grossly clear",
    "acute": "acute/emergent", "disease": "dz", "pneumonia": "PNA", "effusion": "effusion (pleural)",
    "chest": "thorax", "size": "dimensions", "within": "w/in", "limits": "lims", "with": "w/", "without": "w/o",
    "left": "L", "right": "R", "unchanged": "stable vs prior", "mild": "minimal", "seen": "visualized",
}
_BOILERPLATE = ("Dictated by attending; transcribed by voice recognition, errors possible. "
                "Comparison: outside films not available. ")


def shift_sensor(rows: list[list[float]], gain: float = 3.0, offset: float = 2.0) -> list[list[float]]:
    return (np.asarray(rows, dtype=np.float64) * gain + offset).tolist()


def shift_image(b64: str, brightness: float = 0.45, blur_radius: float = 1.5) -> str:
    from PIL import Image, ImageEnhance, ImageFilter

    from mmops.datasets.packs import png_bytes

    src = Image.open(io.BytesIO(base64.b64decode(b64)))
    img: Image.Image = src.convert("RGB" if src.mode not in ("L", "RGB") else src.mode)
    out = ImageEnhance.Brightness(img).enhance(brightness).filter(ImageFilter.GaussianBlur(blur_radius))
    return base64.b64encode(png_bytes(np.asarray(out))).decode("ascii")


def shift_text(text: str) -> str:
    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        new = _VOCABULARY.get(word.lower())
        return word if new is None else (new.capitalize() if word[0].isupper() else new)

    return _BOILERPLATE + re.sub(r"[A-Za-z]+", swap, text)


def shift_record(pack: DomainPack, payload: dict[str, Any]) -> dict[str, Any]:
    """The same record as the field would send it after the shift (its id marked)."""
    inputs: dict[str, Any] = {}
    for name, value in payload["inputs"].items():
        spec = pack.modality(name)
        if isinstance(spec, SensorSpec):
            inputs[name] = shift_sensor(value)
        elif isinstance(spec, ImageSpec):
            inputs[name] = shift_image(value)
        else:
            inputs[name] = shift_text(value)
    return {**payload, "id": f"shifted-{payload.get('id')}", "inputs": inputs}
