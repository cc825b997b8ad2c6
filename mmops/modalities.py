"""Per-modality decoding, checks, summary statistics and model inputs, shared by ingest, training, serving
and monitoring so that a record is read the same way everywhere.

Decoders take bytes (what lands in a folder or arrives over HTTP) and raise BadInputError with a reason a
person can act on.
"""

from __future__ import annotations

import io
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmops.domains import ImageSpec, SensorSpec, TextSpec
from mmops.errors import BadInputError
from mmops.phi import deidentify_dicom, is_dicom, read_dicom, redact_text, write_dicom

Spec = ImageSpec | SensorSpec | TextSpec

MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Decoded:
    """A decoded modality value: HxWxC uint8 image, (time x channels) float array, or text.

    `stored` is what ingest keeps when it differs from the landed bytes (a de-identified DICOM, redacted
    text); `notes` says what was changed (e.g. {"phi_date": 2}).
    """

    value: np.ndarray | str
    stats: dict[str, float]
    stored: bytes | None = None
    notes: dict[str, int] = field(default_factory=dict)


# --- images ---------------------------------------------------------------------------------------------


def decode_image(data: bytes, spec: ImageSpec, phi_key: bytes | None = None) -> Decoded:
    """PNG/JPEG (verified, then fully decoded; EXIF orientation applied) or DICOM (rescaled and windowed)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise BadInputError("empty file")
    if is_dicom(data):
        return _decode_dicom_image(data, spec, phi_key)
    try:
        with Image.open(io.BytesIO(data)) as probe:
            w, h = probe.size  # from the header, before any pixel is decoded
            if w * h > spec.max_pixels:
                raise BadInputError(f"image header claims {w}x{h}, over the pixel limit ({spec.max_pixels})")
            probe.verify()
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            arr = _to_uint8(ImageOps.exif_transpose(img), spec.channels)
    except BadInputError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow refuses at open, before our own check, beyond twice its global limit; the limit that
        # applies is the pack's, so that is the one the reason names (the service says the same)
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(claimed[1]):,} pixels" if claimed else "a size"
        raise BadInputError(f"image header claims {size}, over the pixel limit ({spec.max_pixels}; "
                            "decompression-bomb guard)") from None
    except UnidentifiedImageError:
        raise BadInputError("not a readable image: no image format recognised in its bytes") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadInputError(f"not a readable image: {exc}") from None
    return _checked_image(arr, spec)


def _to_uint8(img: Any, channels: int) -> np.ndarray:
    """Mode policy: 16-bit and float grayscale are scaled to 8 bits by their range; palette, alpha and
    CMYK images are converted; the result is grayscale or RGB as the spec asks."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raw = np.asarray(img, dtype=np.float64)
        lo, hi = float(raw.min()), float(raw.max())
        gray = np.zeros(raw.shape, np.uint8) if hi <= lo else ((raw - lo) / (hi - lo) * 255).round().astype(np.uint8)
        from PIL import Image

        img = Image.fromarray(gray, mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")  # alpha over black, explicitly, rather than whatever convert() picks
    return np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)


def _checked_image(arr: np.ndarray, spec: ImageSpec, stored: bytes | None = None,
                   notes: dict[str, int] | None = None) -> Decoded:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if min(arr.shape[:2]) < spec.min_side:
        raise BadInputError(f"image is {arr.shape[1]}x{arr.shape[0]}, smaller than {spec.min_side} pixels a side")
    return Decoded(arr, image_stats(arr), stored, notes or {})


def _decode_dicom_image(data: bytes, spec: ImageSpec, phi_key: bytes | None) -> Decoded:
    ds = read_dicom(data)
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows * cols > spec.max_pixels:
        raise BadInputError(f"DICOM image is {cols}x{rows}, over the pixel limit ({spec.max_pixels})")
    if "PixelData" not in ds:
        raise BadInputError("DICOM file has no pixel data (is it an image?)")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for truncated or compressed-without-codec data
        raise BadInputError(f"DICOM pixel data cannot be decoded: {exc}") from None
    if pixels.ndim == 3 and pixels.shape[-1] != 3:  # multi-frame: the middle frame represents the series
        pixels = pixels[pixels.shape[0] // 2]
    if pixels.ndim == 3:
        arr = pixels.astype(np.uint8) if pixels.dtype == np.uint8 else _window(pixels.mean(axis=2), None)
        if spec.channels == 1:
            arr = arr.mean(axis=2).round().astype(np.uint8) if arr.ndim == 3 else arr
    else:
        values = pixels.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1) + float(
            ds.get("RescaleIntercept", 0) or 0)
        arr = _window(values, _dicom_window(ds) or spec.window)
        if ds.get("PhotometricInterpretation") == "MONOCHROME1":
            arr = 255 - arr
        if spec.channels == 3:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
    stored, notes = None, {}
    if phi_key is not None:
        notes = {f"phi_{k}": v for k, v in deidentify_dicom(ds, phi_key).items() if v}
        stored = write_dicom(ds)
    return _checked_image(arr, spec, stored, notes)


def _dicom_window(ds: Any) -> tuple[float, float] | None:
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    return _first(center), _first(width)


def _first(value: Any) -> float:
    """A DICOM numeric attribute may hold several values (several windows): the first one counts."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return float(value[0])
    return float(value)


def _window(values: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """Linear VOI window (center, width) to uint8; the value range when there is no window."""
    if window is None:
        lo, hi = float(values.min()), float(values.max())
    else:
        center, width = window
        lo, hi = center - width / 2, center + width / 2
    if hi <= lo:
        return np.zeros(values.shape, np.uint8)
    return (np.clip((values - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)


def image_stats(arr: np.ndarray) -> dict[str, float]:
    gray = arr.astype(np.float32).mean(axis=2) / 255.0
    gy, gx = np.gradient(gray) if min(gray.shape) > 1 else (np.zeros_like(gray), np.zeros_like(gray))
    return {
        "height": float(arr.shape[0]),
        "width": float(arr.shape[1]),
        "brightness": float(gray.mean()),
        "contrast": float(gray.std()),
        "sharpness": float(np.sqrt(gx**2 + gy**2).mean()),
        "blur": _laplacian_variance(gray * 255.0),
    }


def _laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian (in grey levels): low means out of focus or featureless."""
    if min(gray.shape) < 3:
        return 0.0
    lap = (gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:]) - 4.0 * gray[1:-1, 1:-1]
    return float(lap.var())


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


def decode_sensor(data: bytes, spec: SensorSpec, phi_key: bytes | None = None) -> Decoded:
    """CSV or Parquet (a `timestamp` column in seconds + one column per channel), or a DICOM waveform."""
    if not data:
        raise BadInputError("empty file")
    if is_dicom(data):
        return _decode_dicom_waveform(data, spec, phi_key)
    if data[:4] == b"PAR1":
        columns, values = _read_parquet(data)
    else:
        columns, values = _read_csv(data)
    expected = ["timestamp", *spec.channels]
    if columns != expected:
        missing = [c for c in expected if c not in columns]
        extra = [c for c in columns if c not in expected]
        what = "; ".join(p for p in (missing and f"missing columns {missing}", extra and f"unexpected columns {extra}")
                         if p) or "columns out of order"
        raise BadInputError(f"sensor data columns are {columns}, expected {expected}: {what}")
    arr = check_sensor_array(values[:, 1:], spec, timestamps=values[:, 0])
    rate = 1.0 / float(np.median(np.diff(values[:, 0])))
    return Decoded(arr, {**sensor_stats(arr, spec), "rate_hz": rate})


def _read_csv(data: bytes) -> tuple[list[str], np.ndarray]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadInputError("sensor CSV is not UTF-8") from None
    lines = text.splitlines()
    header = [c.strip() for c in lines[0].split(",")] if lines else []
    rows = [ln for ln in lines[1:] if ln.strip()]
    width = len(header)
    try:  # fast path: numpy parses every cell in C; any problem falls through to the row-by-row diagnosis
        values = np.array([row.split(",") for row in rows], dtype=np.float64)
        if values.shape == (len(rows), width):
            return header, values
    except ValueError:
        pass
    values = np.empty((len(rows), width), dtype=np.float64)
    for i, row in enumerate(rows):
        cells = row.split(",")
        if len(cells) != width:
            raise BadInputError(f"sensor CSV row {i + 2} has {len(cells)} fields, the header has {width}")
        try:
            values[i] = [float(c) for c in cells]
        except ValueError:
            raise BadInputError(f"sensor CSV row {i + 2} has a non-numeric value: {row[:80]!r}") from None
    return header, values


def _read_parquet(data: bytes) -> tuple[list[str], np.ndarray]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BadInputError(f"not a readable Parquet file: {exc}") from None
    bad = [f.name for f in table.schema if not (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))]
    if bad:
        raise BadInputError(f"sensor Parquet columns {bad} are not numeric")
    cols = table.column_names
    values = np.column_stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in cols]) \
        if cols and table.num_rows else np.empty((table.num_rows, len(cols)))
    return cols, values


_UNITS = {"uv": 1e-6, "µv": 1e-6, "mv": 1e-3, "v": 1.0}


def _decode_dicom_waveform(data: bytes, spec: SensorSpec, phi_key: bytes | None) -> Decoded:
    from scipy.signal import resample_poly

    ds = read_dicom(data)
    if "WaveformSequence" not in ds or not ds.WaveformSequence:
        raise BadInputError("DICOM file has no waveform (is it an image?)")
    group = ds.WaveformSequence[0]
    try:
        series = ds.waveform_array(0).astype(np.float64)
    except Exception as exc:  # truncated or malformed waveform data
        raise BadInputError(f"DICOM waveform cannot be decoded: {exc}") from None
    names, units = [], []
    for ch in group.ChannelDefinitionSequence:
        source = ch.get("ChannelSourceSequence")
        names.append(str(source[0].CodeMeaning) if source else "")
        unit_seq = ch.get("ChannelSensitivityUnitsSequence")
        units.append(str(unit_seq[0].CodeValue).lower() if unit_seq else "")
    columns = []
    for channel in spec.channels:
        wanted = spec.dicom_channels.get(channel, channel).lower()
        match = [i for i, n in enumerate(names) if n.lower() == wanted or n.lower().startswith(wanted + " ")]
        if not match:
            raise BadInputError(f"DICOM waveform has no channel {wanted!r} for {channel}; it has {names}")
        col = series[:, match[0]]
        if spec.unit and units[match[0]] in _UNITS and spec.unit.lower() in _UNITS:
            col = col * _UNITS[units[match[0]]] / _UNITS[spec.unit.lower()]
        columns.append(col)
    values = np.column_stack(columns)
    rate = float(group.SamplingFrequency)
    if abs(rate - spec.sample_rate_hz) > spec.rate_tolerance * spec.sample_rate_hz:
        from fractions import Fraction

        ratio = Fraction(spec.sample_rate_hz / rate).limit_denominator(1000)
        values = resample_poly(values, ratio.numerator, ratio.denominator, axis=0)
    arr = check_sensor_array(values, spec)
    notes = {"resampled_from_hz": int(rate)} if rate != spec.sample_rate_hz else {}
    stored = None
    if phi_key is not None:
        notes |= {f"phi_{k}": v for k, v in deidentify_dicom(ds, phi_key).items() if v}
        stored = write_dicom(ds)
    return Decoded(arr, {**sensor_stats(arr, spec), "rate_hz": spec.sample_rate_hz}, stored, notes)


def check_sensor_array(values: Any, spec: SensorSpec, timestamps: np.ndarray | None = None) -> np.ndarray:
    """Validate a (time x channels) array; returns it as float32."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(spec.channels):
        raise BadInputError(f"sensor data has shape {values.shape}, expected (time, {len(spec.channels)})")
    if values.shape[0] < 2 or values.shape[0] > spec.max_rows:
        raise BadInputError(f"sensor data has {values.shape[0]} samples; allowed 2..{spec.max_rows}")
    if not np.isfinite(values).all():
        raise BadInputError("sensor data contains NaN or infinite values")
    if np.abs(values).max() > np.finfo(np.float32).max:  # the model computes in float32
        raise BadInputError(f"sensor data has values beyond ±{np.finfo(np.float32).max:.3g}")
    if timestamps is not None:
        if not np.isfinite(timestamps).all():
            raise BadInputError("sensor timestamps contain NaN or infinite values")
        steps = np.diff(timestamps)
        if not (steps > 0).all():
            at = int(np.argmax(steps <= 0)) + 1
            raise BadInputError(f"sensor timestamps are not strictly increasing (row {at + 2}: "
                                f"{timestamps[at]:g} after {timestamps[at - 1]:g})")
        rate = 1.0 / float(np.median(steps))
        if abs(rate - spec.sample_rate_hz) > spec.rate_tolerance * spec.sample_rate_hz:
            raise BadInputError(f"sensor sampling rate is {rate:.4g} Hz, expected {spec.sample_rate_hz:g} Hz "
                                f"(within {spec.rate_tolerance:.0%})")
    return values.astype(np.float32)


def sensor_stats(values: np.ndarray, spec: SensorSpec) -> dict[str, float]:
    stats: dict[str, float] = {"n_samples": float(values.shape[0])}
    for j, ch in enumerate(spec.channels):
        x = values[:, j]
        lo, hi = float(x.min()), float(x.max())
        stats[f"{ch}_mean"] = float(x.mean())
        stats[f"{ch}_std"] = float(x.std())
        stats[f"{ch}_min"], stats[f"{ch}_max"] = lo, hi
        # share of steps that do not move (a stuck or disconnected sensor repeats its last value)
        stats[f"{ch}_flat_share"] = float((np.diff(x) == 0).mean()) if len(x) > 1 else 1.0
        # share of samples pinned at the extremes (a saturated sensor sits on its rails)
        stats[f"{ch}_clip_share"] = 0.0 if hi == lo else float(((x == hi) | (x == lo)).mean())
    return stats


def scaled(values: np.ndarray, spec: SensorSpec) -> np.ndarray:
    """The values on the spec's scale (the model's input before standardisation)."""
    return np.sign(values) * np.log1p(np.abs(values)) if spec.scale == "symlog" else values


STANDARD_BOUND = 1e4


def sensor_tensor(values: np.ndarray, spec: SensorSpec, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(time x channels) -> (channels x length) float32, standardised with training statistics, cropped or
    zero-padded to the spec's length."""
    with np.errstate(over="ignore"):  # a value at float32's edge: clipped below, like any far outlier
        x = (scaled(values[: spec.length], spec) - mean) / std
    # Far outliers (a glitching sensor, a client's garbage) are held at STANDARD_BOUND training deviations,
    # so that the model's float32 arithmetic stays finite; no training value comes anywhere near it
    x = np.clip(x, -STANDARD_BOUND, STANDARD_BOUND)
    out = np.zeros((spec.length, len(spec.channels)), dtype=np.float32)
    out[: x.shape[0]] = x
    return np.ascontiguousarray(out.T)


# --- text -----------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"[a-z0-9]+")


_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
         (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def decode_text(data: bytes, spec: TextSpec, phi_key: bytes | None = None) -> Decoded:
    """UTF-8 (a BOM is tolerated); UTF-16/32 with a BOM if the spec allows it; anything else is rejected with
    the encoding it most likely is. Stored as UTF-8, PHI-redacted when the spec asks."""
    if not data:
        raise BadInputError("empty file")
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), "utf-8")
    if encoding not in spec.encodings:
        raise BadInputError(f"text is {encoding.upper()} (byte-order mark); {spec.name} accepts {list(spec.encodings)}")
    try:
        text = data.decode("utf-8-sig" if encoding == "utf-8" else encoding)
    except UnicodeDecodeError as exc:
        raise BadInputError(f"text is not valid {encoding.upper()} (byte {exc.start}){_guess(data)}") from None
    checked = check_text(text, spec)
    notes = {f"phi_{k}": n for k, n in redact_text(text)[1].items()} if spec.redact_phi else {}
    encoded = checked.encode("utf-8")
    return Decoded(checked, text_stats(checked), None if encoded == data else encoded, notes)


def _guess(data: bytes) -> str:
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(data[:65536]).best()
    except Exception:  # the guess only improves the message
        return ""
    return f"; it looks like {best.encoding}" if best is not None and best.encoding != "utf_8" else ""


def check_text(text: str, spec: TextSpec) -> str:
    """Length and content checks; PHI redaction when the spec asks (idempotent, so safe to repeat)."""
    if not text.strip():
        raise BadInputError("text is empty")
    if len(text) < spec.min_chars:
        raise BadInputError(f"text has {len(text)} characters, under the {spec.min_chars} minimum")
    if len(text) > spec.max_chars:
        raise BadInputError(f"text has {len(text)} characters, over the {spec.max_chars} limit")
    if "\x00" in text:
        raise BadInputError("text contains NUL characters")
    return redact_text(text)[0] if spec.redact_phi else text


def text_stats(text: str) -> dict[str, float]:
    return {
        "n_chars": float(len(text)),
        "n_words": float(len(text.split())),
        "non_ascii_share": sum(ord(c) > 127 for c in text) / max(1, len(text)),
        # PHI patterns still in the text (0 once redacted): the validation gate's leak check
        "phi_hits": float(sum(redact_text(text)[1].values())),
    }


def text_tensor(text: str, spec: TextSpec) -> np.ndarray:
    """Hashed bag-of-tokens ids (0 = padding). crc32 is stable across processes, unlike hash()."""
    ids = [1 + zlib.crc32(t.encode()) % (spec.vocab_buckets - 1) for t in _TOKEN.findall(text.lower())]
    out = np.zeros(spec.max_tokens, dtype=np.int64)
    ids = ids[: spec.max_tokens]
    out[: len(ids)] = ids
    return out


# --- dispatch -------------------------------------------------------------------------------------------


def decode(data: bytes, spec: Spec, phi_key: bytes | None = None) -> Decoded:
    """Decode and check one file's bytes; the returned stats are the record's summary features.

    With `phi_key` (ingest), DICOM files are de-identified and `stored` holds the bytes to keep; without it
    (reading stored blobs back) they are taken as they are.
    """
    if len(data) > MAX_FILE_BYTES:
        raise BadInputError(f"file is {len(data)} bytes, over the {MAX_FILE_BYTES}-byte limit")
    if isinstance(spec, ImageSpec):
        return decode_image(data, spec, phi_key)
    if isinstance(spec, SensorSpec):
        return decode_sensor(data, spec, phi_key)
    return decode_text(data, spec, phi_key)


def summary_stats(value: Any, spec: Spec) -> dict[str, float]:
    if isinstance(spec, ImageSpec):
        return image_stats(value)
    if isinstance(spec, SensorSpec):
        return sensor_stats(value, spec)
    return text_stats(value)


def sensor_csv_bytes(values: np.ndarray, channels: list[str], sample_rate_hz: float) -> bytes:
    """A sensor series as the CSV that decoding reads: a `timestamp` column in seconds, then one column per
    channel (how the bundled packs land their series, and how the service turns a request back into a file)."""
    buf = io.StringIO()
    buf.write(",".join(["timestamp", *channels]) + "\n")
    for i, row in enumerate(values):
        buf.write(f"{i / sample_rate_hz:.6f}," + ",".join(f"{v:.6g}" for v in row) + "\n")
    return buf.getvalue().encode("utf-8")
