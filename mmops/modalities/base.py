"""What a modality kind is: the spec a domain pack writes for it (`ModalitySpec`), what decoding one file
returns (`Decoded`), and everything the platform does that depends on the kind (`ModalityKind`).

A kind is one module (mmops/modalities/sensor.py, image.py, text.py) holding a spec and a ModalityKind, and
one registration (registry.py). Nothing outside this package asks which kind a modality is: ingest, the
validation gate, training, the model, the service, the drift demo and the labeling tool call the kind.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from torch import nn

NAME = r"[a-z][a-z0-9_]*"  # domains, modalities and rules: lowercase letters, digits and _
MAX_FILE_BYTES = 64 * 1024 * 1024

Expectation = tuple[str, dict[str, Any], str]  # (GX expectation class, kwargs, severity)
T = TypeVar("T")


def per_shape(values: Sequence[Any], figures: Callable[[np.ndarray], list[T]], dtype: Any = None) -> list[T]:
    """`figures` of values stacked by shape (an array of (n, *shape) per shape, as `dtype`), each value's
    result in the values' order: what a kind's `stats_many` reduces at once instead of value by value."""
    out: list[T | None] = [None] * len(values)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, value in enumerate(values):
        groups.setdefault(np.shape(value), []).append(i)
    for idx in groups.values():
        stack = np.stack([np.asarray(values[i], dtype=dtype) for i in idx])
        for i, result in zip(idx, figures(stack), strict=True):
            out[i] = result
    return cast(list[T], out)


def file_from_wire(raw: Any, max_chars: int, what: str) -> bytes:
    """A request's base64 string of a file (an image, audio, a clip) -> its bytes; BadInputError otherwise."""
    from mmops.errors import BadInputError

    if not isinstance(raw, str):
        raise BadInputError(f"expected a base64 string of {what}")
    if len(raw) > max_chars:
        raise BadInputError(f"{what} payload over {max_chars} characters")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise BadInputError("not valid base64") from None


class ModalitySpec(BaseModel):
    """What every modality of a domain pack says, whatever its kind; a kind's spec adds its own fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(pattern=f"^{NAME}$")
    required: bool = False  # every record must have it (the validation gate checks)
    kind: str  # the registered kind
    extensions: tuple[str, ...] = ()  # the landed files it reads (lowercase, with the dot)


@dataclass(frozen=True)
class Decoded:
    """A decoded modality value (an HxWxC uint8 image, a (time x channels) float array, a text...) and its
    summary statistics (the record's features for validation, labeling rules and drift).

    `stored` is what ingest keeps when it differs from the landed bytes (a de-identified DICOM, redacted
    text); `notes` says what was changed (e.g. {"phi_date": 2}).
    """

    value: Any
    stats: dict[str, float]
    stored: bytes | None = None
    notes: dict[str, int] = field(default_factory=dict)


@dataclass
class Encoder:
    """A kind's default encoder for a modality: its backbone (`out_dim` features), where pretrained weights
    came from (None: random initialisation), and whether it reads the true lengths of padded sequences."""

    backbone: nn.Module
    source: str | None = None
    takes_lengths: bool = False


class ModalityKind:
    """Everything that depends on what a modality is, in one place. Subclass it, set `name` and `spec`,
    implement the abstract methods; the others have defaults that suit a kind without the feature."""

    name: ClassVar[str]
    spec: ClassVar[type[ModalitySpec]]
    channels_last: ClassVar[bool] = False  # its tensors are images (NHWC memory layout speeds GPU convolutions)
    nudge_says: ClassVar[str] = ""  # what `nudge` changes, as the model card says it ("": the kind has none)

    # --- ingest: bytes -> a checked value and its statistics ---------------------------------------------

    def decode(self, data: bytes, spec: Any, phi_key: bytes | None = None) -> Decoded:
        """Decode and check one file's bytes; BadInputError with a reason a person can act on otherwise.
        With `phi_key` (ingest), identifying data is removed and `stored` holds the bytes to keep."""
        raise NotImplementedError

    def read(self, data: bytes, spec: Any) -> Any:
        """The decoded, checked value alone, as training, serving and the labeling tool read a stored or sent
        file again (the statistics were taken at ingest). A kind whose statistics cost more than decoding
        (audio's speech detector) overrides it to skip them."""
        return self.decode(data, spec).value

    def stats(self, value: Any, spec: Any) -> dict[str, float]:
        """Summary statistics of a decoded value: validation, labeling rules and drift read these."""
        raise NotImplementedError

    def stats_many(self, values: list[Any], spec: Any) -> list[dict[str, float]]:
        """`stats` of each value (the prediction log's writer computes a batch at once); a kind whose figures
        vectorize over values of one shape overrides it."""
        return [self.stats(v, spec) for v in values]

    # --- the validation gate ------------------------------------------------------------------------------

    def expectations(self, spec: Any) -> list[Expectation]:
        """Great Expectations checks on the statistics of every record's value of this modality."""
        return []

    # --- tensors: training and serving --------------------------------------------------------------------

    def fit(self, spec: Any, values: list[Any]) -> dict[str, Any] | None:
        """Statistics fitted on the training split that `tensor` needs (None: it needs none)."""
        return None

    def tensor(self, value: Any, spec: Any, fitted: Mapping[str, Any], options: Mapping[str, str]) -> np.ndarray:
        """A decoded value -> the model's input array; `options` are the model's choices (`text_encoder`)."""
        raise NotImplementedError

    def empty(self, spec: Any) -> np.ndarray:
        """The input array of a record that lacks the modality (masked out)."""
        raise NotImplementedError

    def units(self, value: Any, spec: Any, options: Mapping[str, str]) -> list[str] | None:
        """Kinds whose input is a sequence of discrete units (text's token ids): what each position of
        `tensor`'s array is, for explanations that attribute to units (mmops.explain). None: a continuous
        input, attributed by gradients."""
        return None

    def length(self, value: Any, spec: Any) -> int | None:
        """Sequence kinds: the samples the model reads of a value (the rest is padding). None otherwise."""
        return None

    def arch(self, params: Any) -> dict[str, Any]:
        """What a model card records of the training parameters for this kind's encoder."""
        return {}

    def encoder(self, spec: Any, arch: Mapping[str, Any], pretrained: bool) -> Encoder:
        """The default encoder of this kind for `spec`."""
        raise NotImplementedError

    def freeze_epochs(self, params: Any) -> int:
        """Epochs a pretrained backbone of this kind stays frozen (-1: always)."""
        return int(params.freeze_epochs)

    # --- the HTTP API -------------------------------------------------------------------------------------

    def wire_schema(self, spec: Any) -> dict[str, Any]:
        """JSON Schema of the value `/predict` takes for the modality, as exactly as JSON Schema can say it."""
        raise NotImplementedError

    def from_wire(self, raw: Any, spec: Any) -> Any:
        """A request's JSON value -> the decoded, checked value (BadInputError otherwise)."""
        raise NotImplementedError

    def to_wire(self, data: bytes, value: Any, spec: Any) -> Any:
        """A file (its bytes and decoded value) -> the JSON value `/predict` takes for it."""
        raise NotImplementedError

    def to_file(self, value: Any, spec: Any) -> tuple[bytes, str]:
        """The inverse of `to_wire`: a JSON value -> (file bytes, suffix) as a site would land it."""
        raise NotImplementedError

    def warnings(self, spec: Any, value: Any, raw: Any) -> list[str]:
        """What a client should know about how its value was read (padded, cut, redacted)."""
        return []

    # --- the field and the labeling tool ------------------------------------------------------------------

    shift_note: ClassVar[str] = ""  # what `shift` does, in a few words (the drift demo says it)

    def shift(self, raw: Any, spec: Any) -> Any:
        """The JSON value as the field sends it after a typical shift (the drift demo's), for a modality of
        this spec; unchanged by default."""
        return raw

    def blend(self, a: Any, b: Any, weight: float) -> Any | None:
        """(1 - weight) * a + weight * b of two decoded values, over the length both have (the detectors'
        direction check, mmops.behaviour); None where the kind cannot mix them. Default: arrays."""
        return blend_arrays(a, b, weight)

    def nudge(self, raw: Any, spec: Any) -> Any | None:
        """The JSON value after a change a model must not care about (a small gain, a little less light, a
        synonym): the behavioural tests' invariance check (mmops.shifts.nudge_record). None: this kind has
        none."""
        return None

    def labelstudio_tag(self, spec: Any) -> str:
        """The Label Studio config element that shows this modality (its value is `$<name>`)."""
        from xml.sax.saxutils import quoteattr

        return f'<Text name={quoteattr(spec.name)} value="${spec.name}"/>'

    def labelstudio_value(self, spec: Any, value: Any) -> Any:
        """A decoded value as the Label Studio element reads it."""
        return str(value)

    def labelstudio_placeholder(self, spec: Any) -> Any:
        """What the element shows for a record that lacks the modality."""
        return f"({spec.name} missing in this record)"


def blend_arrays(a: Any, b: Any, weight: float) -> np.ndarray | None:
    """(1 - weight) * a + weight * b of two arrays alike but in their first axis (cut to the shorter), in a's
    dtype (integers rounded and kept in range); None for anything else."""
    if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray) or a.shape[1:] != b.shape[1:]:
        return None
    n = min(len(a), len(b))
    mixed = (1 - weight) * a[:n].astype(np.float64) + weight * b[:n].astype(np.float64)
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        mixed = np.clip(np.rint(mixed), info.min, info.max)
    return mixed.astype(a.dtype)
