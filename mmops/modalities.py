"""Per-modality decoding, checks, summary statistics and model inputs, shared by ingest, training, serving
and monitoring so that a record is read the same way everywhere.

Decoders take bytes (what lands in a folder or arrives over HTTP) and raise BadInputError with a reason a
person can act on.
"""

from __future__ import annotations

import io
import re
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmops.domains import ImageSpec, SensorSpec, TextSpec
from mmops.errors import BadInputError

Spec = ImageSpec | SensorSpec | TextSpec

MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Decoded:
    """A decoded modality value: HxWxC uint8 image, (time x channels) float array, or text."""

    value: np.ndarray | str
    stats: dict[str, float]


# --- images ---------------------------------------------------------------------------------------------


def decode_image(data: bytes, spec: ImageSpec) -> Decoded:
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadInputError("empty file")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            w, h = probe.size
            if w * h > spec.max_pixels:
                raise BadInputError(f"image is {w}x{h}, over the pixel limit ({spec.max_pixels})")
            probe.verify()
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            arr = np.asarray(img.convert("L" if spec.channels == 1 else "RGB"), dtype=np.uint8)
    except BadInputError:
        raise
    except Image.DecompressionBombError as exc:
        raise BadInputError(f"image is over the pixel limit (decompression-bomb guard): {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadInputError(f"not a readable image: {exc}") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return Decoded(arr, image_stats(arr))


def image_stats(arr: np.ndarray) -> dict[str, float]:
    gray = arr.astype(np.float32).mean(axis=2) / 255.0
    gy, gx = np.gradient(gray) if min(gray.shape) > 1 else (np.zeros_like(gray), np.zeros_like(gray))
    return {
        "height": float(arr.shape[0]),
        "width": float(arr.shape[1]),
        "brightness": float(gray.mean()),
        "contrast": float(gray.std()),
        "sharpness": float(np.sqrt(gx**2 + gy**2).mean()),
    }


def image_tensor(arr: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """HxWxC uint8 -> CxHxW float32 in [0, 1], resized to the spec."""
    from PIL import Image

    h, w = spec.size
    if arr.shape[0] != h or arr.shape[1] != w:
        mode = "L" if arr.shape[2] == 1 else "RGB"
        img = Image.fromarray(arr[:, :, 0] if mode == "L" else arr, mode=mode)
        arr = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR))
        arr = arr[:, :, None] if arr.ndim == 2 else arr
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32) / 255.0


# --- sensors --------------------------------------------------------------------------------------------


def decode_sensor(data: bytes, spec: SensorSpec) -> Decoded:
    if not data:
        raise BadInputError("empty file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadInputError("sensor CSV is not UTF-8") from None
    lines = text.splitlines()
    header = [c.strip() for c in lines[0].split(",")] if lines else []
    expected = ["timestamp", *spec.channels]
    if header != expected:
        raise BadInputError(f"sensor CSV columns are {header}, expected {expected}")
    rows = [ln for ln in lines[1:] if ln.strip()]
    if len(rows) < 2:
        raise BadInputError(f"sensor CSV has {len(rows)} data rows, need at least 2")
    if len(rows) > spec.max_rows:
        raise BadInputError(f"sensor CSV has {len(rows)} rows, over the {spec.max_rows}-row limit")
    width = len(expected)
    values = np.empty((len(rows), width), dtype=np.float64)
    for i, row in enumerate(rows):
        cells = row.split(",")
        if len(cells) != width:
            raise BadInputError(f"sensor CSV row {i + 2} has {len(cells)} fields, expected {width}")
        try:
            values[i] = [float(c) for c in cells]
        except ValueError:
            raise BadInputError(f"sensor CSV row {i + 2} has a non-numeric value: {row[:80]!r}") from None
    return Decoded(check_sensor_array(values[:, 1:], spec, timestamps=values[:, 0]), {})


def check_sensor_array(values: Any, spec: SensorSpec, timestamps: np.ndarray | None = None) -> np.ndarray:
    """Validate a (time x channels) array; returns it as float32."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(spec.channels):
        raise BadInputError(f"sensor data has shape {values.shape}, expected (time, {len(spec.channels)})")
    if values.shape[0] < 2 or values.shape[0] > spec.max_rows:
        raise BadInputError(f"sensor data has {values.shape[0]} samples; allowed 2..{spec.max_rows}")
    if not np.isfinite(values).all():
        raise BadInputError("sensor data contains NaN or infinite values")
    if timestamps is not None:
        if not np.isfinite(timestamps).all() or not (np.diff(timestamps) > 0).all():
            raise BadInputError("sensor timestamps are not strictly increasing")
    return values.astype(np.float32)


def sensor_stats(values: np.ndarray, spec: SensorSpec) -> dict[str, float]:
    stats: dict[str, float] = {"n_samples": float(values.shape[0])}
    for j, ch in enumerate(spec.channels):
        stats[f"{ch}_mean"] = float(values[:, j].mean())
        stats[f"{ch}_std"] = float(values[:, j].std())
    return stats


def sensor_tensor(values: np.ndarray, spec: SensorSpec, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(time x channels) -> (channels x length) float32, standardised with training statistics, cropped or
    zero-padded to the spec's length."""
    x = (values[: spec.length] - mean) / std
    out = np.zeros((spec.length, len(spec.channels)), dtype=np.float32)
    out[: x.shape[0]] = x
    return np.ascontiguousarray(out.T)


# --- text -----------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"[a-z0-9]+")


def decode_text(data: bytes, spec: TextSpec) -> Decoded:
    if not data:
        raise BadInputError("empty file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"text is not valid UTF-8 (byte {exc.start})") from None
    return Decoded(check_text(text, spec), {})


def check_text(text: str, spec: TextSpec) -> str:
    if not text.strip():
        raise BadInputError("text is empty")
    if len(text) > spec.max_chars:
        raise BadInputError(f"text has {len(text)} characters, over the {spec.max_chars} limit")
    if "\x00" in text:
        raise BadInputError("text contains NUL characters")
    return text


def text_stats(text: str) -> dict[str, float]:
    return {"n_chars": float(len(text)), "n_words": float(len(text.split()))}


def text_tensor(text: str, spec: TextSpec) -> np.ndarray:
    """Hashed bag-of-tokens ids (0 = padding). crc32 is stable across processes, unlike hash()."""
    ids = [1 + zlib.crc32(t.encode()) % (spec.vocab_buckets - 1) for t in _TOKEN.findall(text.lower())]
    out = np.zeros(spec.max_tokens, dtype=np.int64)
    ids = ids[: spec.max_tokens]
    out[: len(ids)] = ids
    return out


# --- dispatch -------------------------------------------------------------------------------------------


def decode(data: bytes, spec: Spec) -> Decoded:
    """Decode and check one file's bytes; the returned stats are the record's summary features."""
    if len(data) > MAX_FILE_BYTES:
        raise BadInputError(f"file is {len(data)} bytes, over the {MAX_FILE_BYTES}-byte limit")
    if isinstance(spec, ImageSpec):
        return decode_image(data, spec)
    if isinstance(spec, SensorSpec):
        dec = decode_sensor(data, spec)
        return Decoded(dec.value, sensor_stats(dec.value, spec))  # type: ignore[arg-type]
    dec = decode_text(data, spec)
    return Decoded(dec.value, text_stats(dec.value))  # type: ignore[arg-type]


def summary_stats(value: Any, spec: Spec) -> dict[str, float]:
    if isinstance(spec, ImageSpec):
        return image_stats(value)
    if isinstance(spec, SensorSpec):
        return sensor_stats(value, spec)
    return text_stats(value)
