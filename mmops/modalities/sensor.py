"""Sensor series (ECG, vibration, IMU, power): a `timestamp` column in seconds and one column per channel, as
CSV or Parquet, or a DICOM waveform (resampled to the spec's rate). The model reads a (channels x length)
array standardised with the training split's statistics; shorter series are zero-padded and masked."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from mmops.errors import BadInputError
from mmops.modalities.base import Decoded, Encoder, Expectation, ModalityKind, ModalitySpec, per_shape
from mmops.phi import deidentify_dicom, is_dicom, read_dicom, write_dicom

FLOAT32_MAX = float(np.finfo(np.float32).max)  # the model computes in float32


class SensorSpec(ModalitySpec):
    kind: Literal["sensor"] = "sensor"
    channels: tuple[str, ...]
    length: int = Field(ge=2)  # the most samples the model reads: longer series are cut, shorter padded and masked
    # the fewest samples a series may have (the validation gate's check); default: half of `length`. A data
    # set of variable-length series sets it to its shortest and `length` to its longest useful length
    min_length: int | None = Field(None, ge=2)
    sample_rate_hz: float = Field(gt=0)
    rate_tolerance: float = Field(0.05, ge=0, lt=1)  # relative deviation of the median timestamp step
    value_range: tuple[float, float] | None = None  # physically possible values (the gate checks min/max)
    unit: str | None = None  # physical unit of the values (DICOM waveforms are converted to it)
    # what the model sees before standardisation: the values, or sign(x) * log1p(|x|) for signals whose
    # amplitudes span orders of magnitude (currents, counts), where a lamp and a heater differ 100-fold
    scale: Literal["linear", "symlog"] = "linear"
    # DICOM waveforms: channel -> lead/source name (CodeMeaning); they are resampled to sample_rate_hz
    dicom_channels: dict[str, str] = Field(default_factory=dict)
    max_rows: int = 1_000_000
    extensions: tuple[str, ...] = (".csv", ".parquet", ".dcm")

    @model_validator(mode="after")
    def _lengths(self) -> SensorSpec:
        if self.min_length is not None and self.min_length > self.length:
            raise ValueError(f"{self.name}: min_length {self.min_length} is over length {self.length} (the most "
                             "samples the model reads)")
        return self

    @property
    def shortest(self) -> int:
        """The fewest samples a series of this modality may have."""
        return self.min_length if self.min_length is not None else max(2, self.length // 2)


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
    if np.abs(values).max() > FLOAT32_MAX:
        raise BadInputError(f"sensor data has values beyond ±{FLOAT32_MAX:.3g}")
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
    """Per channel: mean, std, min, max, the share of steps that do not move (a stuck or disconnected sensor
    repeats its last value) and of samples pinned at the extremes (a saturated sensor sits on its rails)."""
    return sensor_stats_many([values], spec)[0]


def sensor_stats_many(series: list[np.ndarray], spec: SensorSpec) -> list[dict[str, float]]:
    """`sensor_stats` of each series; series of one length are stacked and reduced at once (the prediction
    log's writer computes them for every served record)."""

    # x: (records, time, channels), in float64 (float32 sums drift in their last digits)
    def figures(x: np.ndarray) -> list[dict[str, float]]:
        lo, hi = x.min(axis=1), x.max(axis=1)
        mean, std = x.mean(axis=1), x.std(axis=1)
        flat = (x[:, 1:] == x[:, :-1]).mean(axis=1) if x.shape[1] > 1 else np.ones((len(x), x.shape[2]))
        clip = np.where(hi == lo, 0.0, ((x == hi[:, None]) | (x == lo[:, None])).mean(axis=1))
        out = []
        for per_channel in np.stack([mean, std, lo, hi, flat, clip], axis=2).tolist():  # (records, channels, 6)
            stats: dict[str, float] = {"n_samples": float(x.shape[1])}
            for ch, (m, sd, a, b, f, c) in zip(spec.channels, per_channel, strict=True):
                stats.update({f"{ch}_mean": m, f"{ch}_std": sd, f"{ch}_min": a, f"{ch}_max": b,
                              f"{ch}_flat_share": f, f"{ch}_clip_share": c})
            out.append(stats)
        return out

    return per_shape(series, figures, dtype=np.float64)


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


def sensor_csv_bytes(values: np.ndarray, channels: list[str], sample_rate_hz: float) -> bytes:
    """A sensor series as the CSV that decoding reads: a `timestamp` column in seconds, then one column per
    channel (how the bundled packs land their series, and how the service turns a request back into a file)."""
    buf = io.StringIO()
    buf.write(",".join(["timestamp", *channels]) + "\n")
    for i, row in enumerate(values):
        buf.write(f"{i / sample_rate_hz:.6f}," + ",".join(f"{v:.6g}" for v in row) + "\n")
    return buf.getvalue().encode("utf-8")


def shift_sensor(rows: list[list[float]], gain: float = 3.0, offset: float = 2.0) -> list[list[float]]:
    """A miscalibrated or replaced sensor in the field: gain and offset on every channel."""
    return (np.asarray(rows, dtype=np.float64) * gain + offset).tolist()


_NUMBERS = (int, float)  # what JSON numbers decode to


def _strict_rows(raw: Any, width: int, channels: list[str]) -> None:
    """A request's rows: lists of `width` JSON numbers (`true` or "1.5" is a client's mistake, not a 1.0)."""
    if not isinstance(raw, list) or not all(isinstance(row, list) for row in raw):
        raise BadInputError("expected a list of rows of numbers")
    for row in raw:
        if len(row) != width:
            raise BadInputError(f"every row needs {width} values ({channels})")
        if not all(type(v) in _NUMBERS for v in row):  # a bool is an int to isinstance, not here
            raise BadInputError("every value must be a JSON number")


class SensorKind(ModalityKind):
    name = "sensor"
    nudge_says = "a sensor 5 % more sensitive (gain 1.05)"
    spec = SensorSpec

    def decode(self, data: bytes, spec: SensorSpec, phi_key: bytes | None = None) -> Decoded:
        return decode_sensor(data, spec, phi_key)

    def stats(self, value: np.ndarray, spec: SensorSpec) -> dict[str, float]:
        return sensor_stats(value, spec)

    def stats_many(self, values: list[np.ndarray], spec: SensorSpec) -> list[dict[str, float]]:
        return sensor_stats_many(values, spec)

    def expectations(self, spec: SensorSpec) -> list[Expectation]:
        tol = spec.rate_tolerance * spec.sample_rate_hz
        exp: list[Expectation] = [
            ("ExpectColumnValuesToBeBetween",
             {"column": "n_samples", "min_value": spec.shortest, "max_value": spec.max_rows}, "critical"),
            ("ExpectColumnValuesToBeBetween",
             {"column": "rate_hz", "min_value": spec.sample_rate_hz - tol, "max_value": spec.sample_rate_hz + tol},
             "critical")]
        for ch in spec.channels:
            exp.append(("ExpectColumnValuesToNotBeNull", {"column": f"{ch}_mean"}, "critical"))
            # A flat channel is a disconnected sensor.
            exp.append(("ExpectColumnValuesToBeBetween",
                        {"column": f"{ch}_std", "min_value": 1e-9, "mostly": 0.9}, "warning"))
            # A stuck sensor repeats its last value; a saturated one sits on its rails.
            exp.append(("ExpectColumnValuesToBeBetween",
                        {"column": f"{ch}_flat_share", "max_value": 0.5, "mostly": 0.95}, "critical"))
            exp.append(("ExpectColumnValuesToBeBetween",
                        {"column": f"{ch}_clip_share", "max_value": 0.2, "mostly": 0.95}, "warning"))
            if spec.value_range is not None:
                lo, hi = spec.value_range
                exp.append(("ExpectColumnValuesToBeBetween", {"column": f"{ch}_min", "min_value": lo}, "critical"))
                exp.append(("ExpectColumnValuesToBeBetween", {"column": f"{ch}_max", "max_value": hi}, "critical"))
        return exp

    def fit(self, spec: SensorSpec, values: list[Any]) -> dict[str, Any] | None:
        stacked = scaled(np.concatenate(values, axis=0), spec)
        return {"mean": stacked.mean(axis=0).astype(float).tolist(),
                "std": np.maximum(stacked.std(axis=0), 1e-6).astype(float).tolist()}

    def tensor(self, value: np.ndarray, spec: SensorSpec, fitted: Mapping[str, Any],
               options: Mapping[str, str]) -> np.ndarray:
        n = len(spec.channels)
        mean = np.asarray(fitted.get("mean", [0.0] * n), dtype=np.float32)
        std = np.asarray(fitted.get("std", [1.0] * n), dtype=np.float32)
        return sensor_tensor(value, spec, mean, std)

    def empty(self, spec: SensorSpec) -> np.ndarray:
        return np.zeros((len(spec.channels), spec.length), dtype=np.float32)

    def length(self, value: np.ndarray, spec: SensorSpec) -> int | None:
        return min(len(value), spec.length)

    def arch(self, params: Any) -> dict[str, Any]:
        return {"sensor_encoder": params.sensor_encoder}

    def encoder(self, spec: SensorSpec, arch: Mapping[str, Any], pretrained: bool) -> Encoder:
        from mmops.models.sensor import SensorBackbone

        return Encoder(SensorBackbone(len(spec.channels), str(arch.get("sensor_encoder", "cnn"))), None, True)

    def wire_schema(self, spec: SensorSpec) -> dict[str, Any]:
        n = len(spec.channels)
        return {"type": "array", "minItems": 2, "maxItems": spec.max_rows,
                "description": f"rows of {list(spec.channels)} at {spec.sample_rate_hz:g} Hz; the model reads "
                               f"{spec.length} (shorter: padded and masked)",
                "items": {"type": "array", "minItems": n, "maxItems": n, "items": {
                    "type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}}}

    def from_wire(self, raw: Any, spec: SensorSpec) -> np.ndarray:
        _strict_rows(raw, len(spec.channels), list(spec.channels))
        return check_sensor_array(raw, spec)

    def to_wire(self, data: bytes, value: np.ndarray, spec: SensorSpec) -> Any:
        return value.tolist()

    def to_file(self, value: Any, spec: SensorSpec) -> tuple[bytes, str]:
        return sensor_csv_bytes(np.asarray(value, dtype=np.float64), list(spec.channels), spec.sample_rate_hz), ".csv"

    def warnings(self, spec: SensorSpec, value: Any, raw: Any) -> list[str]:
        if len(value) == spec.length:
            return []
        how = "zero-padded and masked" if len(value) < spec.length else "only the first ones are read"
        return [f"{spec.name}: {len(value)} samples, the model reads {spec.length} ({how})"]

    shift_note = "sensors x3 gain, +2 offset"

    def shift(self, raw: Any, spec: SensorSpec) -> Any:
        return shift_sensor(raw)

    def nudge(self, raw: Any, spec: SensorSpec) -> Any:
        return shift_sensor(raw, gain=1.05, offset=0.0)  # a sensor 5 % more sensitive

    def labelstudio_tag(self, spec: SensorSpec) -> str:
        from xml.sax.saxutils import quoteattr

        channels = "".join(f"<Channel column={quoteattr(c)}/>" for c in spec.channels)
        return (f'<TimeSeries name={quoteattr(spec.name)} value="${spec.name}" valueType="json" timeColumn="time"'
                f">{channels}</TimeSeries>")

    def labelstudio_value(self, spec: SensorSpec, value: Any) -> Any:
        arr = np.asarray(value, dtype=np.float64)
        out: dict[str, list[float]] = {"time": [round(i / spec.sample_rate_hz, 6) for i in range(arr.shape[0])]}
        for j, ch in enumerate(spec.channels):
            out[ch] = [round(float(x), 6) for x in arr[:, j]]
        return out

    def labelstudio_placeholder(self, spec: SensorSpec) -> Any:
        return {"time": [0.0], **{ch: [0.0] for ch in spec.channels}}
