"""Request and response schemas of the prediction API, and the checks that turn a request into decoded
records (every client mistake becomes a BadInputError, which the service answers with a 4xx)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema

from mmops.domains import DomainPack
from mmops.errors import BadInputError
from mmops.modalities import ModalitySpec, kind_of, read_value, summary_stats
from mmops.serving.canary import Bounds
from mmops.serving.shadow import DUTY

MAX_RECORDS = 256
MAX_ERRORS_SHOWN = 5  # of a request's validation errors, the first few are named; the rest are counted
# A BentoML model tag, `name[:version]` (empty: the domain's current champion), as BentoML's own rule has
# it (lowercase letters, digits, `-._` inside, at most 63 each); checked before any lookup
_TAG_PART = r"[a-z0-9](?:[-._a-z0-9]{0,61}[a-z0-9])?"
MODEL_TAG = f"^$|^{_TAG_PART}(?::{_TAG_PART})?$"


class ErrorOut(BaseModel):
    """Every 4xx and 5xx the service answers: what went wrong, and for a request that fails several checks
    the first few of them (the count is in `error`)."""

    error: str
    detail: str | None = None


_GENERIC_INPUT = {"anyOf": [{"type": "string"},
                            {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}]}


class RecordIn(BaseModel):
    """One record: any subset of the domain's modalities. Images are base64 (PNG/JPEG), sensors a list of
    rows (time x channels, in the domain's channel order), text a string."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(None, max_length=200)
    # strict numbers: `true` or "1.5" in a sensor row is a client's mistake, not a 1.0 or a 1.5
    # each value is checked by its modality's kind (`ModalityKind.from_wire`): sensor numbers are strict, so
    # `true` or "1.5" in a row is a client's mistake, not a 1.0 or a 1.5. The domain's spec (`/docs.json`)
    # gives each modality's exact shape; this generic one the bundled kinds' shapes
    inputs: dict[str, Annotated[Any, WithJsonSchema(_GENERIC_INPUT)]]


class PredictIn(BaseModel):
    """The body of POST /predict."""

    model_config = ConfigDict(extra="forbid")
    records: list[RecordIn] = Field(min_length=1, max_length=MAX_RECORDS)


MAX_EXPLAIN = 8  # records per /explain request: each costs one backward pass per path step and modality
EXPLAIN_QUEUE = 16  # records being explained or waiting at once; a request beyond is answered 503 at once


class ExplainIn(BaseModel):
    """The body of POST /explain."""

    model_config = ConfigDict(extra="forbid")
    records: list[RecordIn] = Field(min_length=1, max_length=MAX_EXPLAIN)
    target: str = Field("", max_length=200, description="a class to explain instead of the answer (classifiers "
                                                        "only); empty: the answer")


class ReloadIn(BaseModel):
    """The body of POST /admin/reload."""

    model_config = ConfigDict(extra="forbid")
    tag: str = Field("", pattern=MODEL_TAG, description="a packaged model's tag; empty: the domain's champion")


class ShadowIn(BaseModel):
    """The body of POST /admin/shadow."""

    model_config = ConfigDict(extra="forbid", strict=True)
    tag: str = Field("", pattern=MODEL_TAG, description="a packaged model to run in shadow; empty: see `stop`")
    stop: bool = Field(False, description="end the shadow; with neither: the trial's state")
    duty: float = Field(DUTY, ge=0.01, le=1, description="the share of the time the shadow may compute")


class CanaryIn(BaseModel):
    """The body of POST /admin/canary."""

    model_config = ConfigDict(extra="forbid", strict=True)
    tag: str = Field("", pattern=MODEL_TAG, description="a packaged model to run as a canary; empty: see `stop`")
    bounds: Bounds = Field(default_factory=Bounds, description="its share and the bounds past which the service ends it")
    stop: bool = Field(False, description="end the canary; with neither: the trial's state")


def validation_error(exc: ValidationError, what: str = "request body") -> ErrorOut:
    """A bounded answer to a body that fails its schema: the count, and the first few errors in a line
    each (never the rejected input itself, which may be large or hold PHI)."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    shown = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(body)'}: {e['msg']}" for e in errors[:MAX_ERRORS_SHOWN])
    more = f" (the first {MAX_ERRORS_SHOWN} follow)" if len(errors) > MAX_ERRORS_SHOWN else ""
    return ErrorOut(error=f"{len(errors)} problem{'s' if len(errors) != 1 else ''} in the {what}{more}",
                    detail=shown[:2000])


class AnomalyOut(BaseModel):
    """An anomaly detector's answer for one record (domains whose task is anomaly detection)."""

    score: float = Field(description="the record's anomaly score, scaled so that the threshold is 1.0")
    threshold: float = Field(1.0, description="calibrated on held-out normal records at the model's false-positive "
                                              "rate (`fpr`)")
    fpr: float = Field(description="the share of normal records the threshold is calibrated to flag")
    is_anomaly: bool
    driven_by: str | None = Field(description="the modality whose score is the record's (the most unusual one)")
    modality_scores: dict[str, float] = Field(description="each present modality's own score (1.0: its threshold)")


class ExpectedOut(BaseModel):
    """What the model scored on its test split given only the modalities this record brought (the model
    card's subsets)."""

    modalities: list[str]
    metric: str = Field(description="accuracy for a classifier, AUROC for an anomaly detector")
    value: float | None = Field(description="none where the test split could not measure it")
    n: int = Field(description="test records that held every one of these modalities")


class PredictionOut(BaseModel):
    id: str | None
    label: str
    probabilities: dict[str, float] | None = Field(
        None, description="per class (classification); none for an anomaly detector, whose answer is `anomaly`")
    anomaly: AnomalyOut | None = None
    model_version: str
    missing_modalities: list[str]
    warnings: list[str] = Field(default_factory=list, description="what the model did not see as it was trained")
    expected: ExpectedOut | None = None


class ModalityExplanation(BaseModel):
    """What one modality brought to an answer, and where inside it."""

    shapley: float = Field(description="its exact Shapley value over the record's modalities: its share of "
                                       "value - base (they sum to it)")
    method: str | None = Field(None, description="integrated_gradients (sensors, audio, images, video), occlusion "
                                                 "(text tokens), memory_bank_distance (anomaly detectors)")
    baseline: str | None = Field(None, description="what the attribution is measured from")
    attribution: Any = Field(None, description="the map, laid out as the input (sum-pooled): a sensor's channels "
                                               "x time, an image's height x width, audio's mels x frames, a "
                                               "clip's frames x height x width; a text's per token")
    units: list[str] | None = Field(None, description="text: the tokens as the model read them (PHI redacted "
                                                      "where the domain says the text may hold it)")
    channels: list[str] | None = None
    grad_cam: Any = Field(None, description="images: Grad-CAM of the encoder's last convolution, height x width")
    steps: int | None = Field(None, description="integrated gradients: the path steps it took")
    completeness_error: float | None = Field(
        None, description="integrated gradients: |sum of the map - (f(input) - f(baseline))| over that gap")
    prediction_gap: float | None = None
    total: float | None = None
    score: float | None = Field(None, description="anomaly detectors: the modality's own score (1.0 = threshold)")
    views: dict[str, Any] | None = Field(None, description="anomaly detectors: per bank, the distance of each "
                                                           "patch, frame or window (`layout` says which)")


class ExplanationOut(BaseModel):
    id: str | None
    label: str | None = Field(description="the explained class (none for an anomaly detector)")
    explained: str = Field(description="what `value` is: a class's probability, or the anomaly score")
    value: float
    base: float = Field(description="`value` with none of the modalities (0 for an anomaly score)")
    probabilities: dict[str, float] | None = None
    modalities: dict[str, ModalityExplanation]
    model_version: str
    missing_modalities: list[str]
    warnings: list[str] = Field(default_factory=list)


def file_to_wire(spec: ModalitySpec, data: bytes) -> Any:
    """A file's bytes -> the JSON value `/predict` takes for its modality, decoded and checked as ingest
    decodes landed files (BadInputError otherwise): an image stays base64 of its own bytes, a sensor CSV
    becomes rows, a text file a string."""
    return kind_of(spec).to_wire(data, read_value(data, spec), spec)


def wire_to_file(spec: ModalitySpec, value: Any) -> tuple[bytes, str]:
    """The inverse of `file_to_wire`: a record's JSON value -> (file bytes, suffix) as a site would land it
    (an image's own bytes, a sensor CSV with timestamps at the declared rate, UTF-8 text)."""
    return kind_of(spec).to_file(value, spec)


def record_warnings(pack: DomainPack, record: RecordIn, values: dict[str, Any]) -> list[str]:
    """What a client should know about how its record was read: missing modalities, and what each kind
    says (sensor series padded or cut to the trained length, PHI redacted from text)."""
    out = []
    missing = [m for m in pack.modality_names if m not in values]
    if missing:
        out.append(f"missing modalities {missing}: predicted from {[m for m in pack.modality_names if m in values]} "
                   "alone")
    for name, value in values.items():
        spec = pack.modality(name)
        out.extend(kind_of(spec).warnings(spec, value, record.inputs[name]))
    return out


def decode_record(pack: DomainPack, record: RecordIn | dict[str, Any], stats: bool = True,
                  ) -> tuple[dict[str, Any], dict[str, dict]]:
    """-> (modality -> decoded value, modality -> summary stats; none without `stats`: they cost more than
    decoding a sensor series, and only the prediction log needs them). Raises BadInputError naming the
    problem."""
    rec = record if isinstance(record, RecordIn) else RecordIn.model_validate(record)
    if not rec.inputs:
        raise BadInputError(f"record {rec.id!r} has no inputs; expected any of {pack.modality_names}")
    values: dict[str, Any] = {}
    summary: dict[str, dict] = {}
    for name, raw in rec.inputs.items():
        if name not in pack.modality_names:
            raise BadInputError(f"unknown modality {name!r}; {pack.name} takes {pack.modality_names}")
        spec = pack.modality(name)
        where = f"record {rec.id!r}, {name}"
        try:
            values[name] = kind_of(spec).from_wire(raw, spec)
        except BadInputError as exc:
            raise BadInputError(f"{where}: {exc}") from None
        except (ValueError, TypeError, OverflowError) as exc:  # numbers no float holds, ragged rows
            raise BadInputError(f"{where}: not readable as {spec.kind} data ({exc})") from None
        if stats:
            summary[name] = summary_stats(values[name], spec)
    return values, summary
