"""Text (reports, notes): UTF-8, or UTF-16/32 with a byte-order mark where the spec allows it; stored as
UTF-8, PHI-redacted when the spec asks. The model reads token ids: MiniLM's WordPiece vocabulary, or crc32
buckets of lowercase tokens (`hashed`, no download)."""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field

from mmops.errors import BadInputError
from mmops.modalities.base import Decoded, Encoder, Expectation, ModalityKind, ModalitySpec
from mmops.phi import redact_text


class TextSpec(ModalitySpec):
    kind: Literal["text"] = "text"
    min_chars: int = Field(1, ge=1)
    max_chars: int = 20_000
    encodings: tuple[str, ...] = ("utf-8",)  # also accepted: "utf-16" (with a BOM); anything else is rejected
    redact_phi: bool = False  # replace names, dates, record numbers, phones, emails before storing
    max_tokens: int = 128
    vocab_buckets: int = 8192
    extensions: tuple[str, ...] = (".txt",)


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
    checked, redacted = _checked(text, spec)
    notes = {f"phi_{k}": n for k, n in redacted.items()}
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
    return _checked(text, spec)[0]


def _checked(text: str, spec: TextSpec) -> tuple[str, dict[str, int]]:
    """-> (the checked text, redacted when the spec asks; the redactions per kind)."""
    if not text.strip():
        raise BadInputError("text is empty")
    if len(text) < spec.min_chars:
        raise BadInputError(f"text has {len(text)} characters, under the {spec.min_chars} minimum")
    if len(text) > spec.max_chars:
        raise BadInputError(f"text has {len(text)} characters, over the {spec.max_chars} limit")
    if "\x00" in text:
        raise BadInputError("text contains NUL characters")
    return redact_text(text) if spec.redact_phi else (text, {})


def text_stats(text: str) -> dict[str, float]:
    return {
        "n_chars": float(len(text)),
        "n_words": float(len(text.split())),
        "non_ascii_share": 0.0 if text.isascii() else sum(ord(c) > 127 for c in text) / len(text),
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


# another site's habits: what a radiologist elsewhere writes instead
_VOCABULARY = {
    "no": "neg", "normal": "wnl", "heart": "cardiac silhouette", "lungs": "lung fields", "clear": "grossly clear",
    "acute": "acute/emergent", "disease": "dz", "pneumonia": "PNA", "effusion": "effusion (pleural)",
    "chest": "thorax", "size": "dimensions", "within": "w/in", "limits": "lims", "with": "w/", "without": "w/o",
    "left": "L", "right": "R", "unchanged": "stable vs prior", "mild": "minimal", "seen": "visualized",
}
_BOILERPLATE = ("Dictated by attending; transcribed by voice recognition, errors possible. "
                "Comparison: outside films not available. ")


# the words of another site's that change no finding: a colleague's words for the same report
_SYNONYMS = {w: _VOCABULARY[w] for w in ("heart", "lungs", "chest", "size")}


def _swap_words(text: str, table: dict[str, str]) -> str:
    """Each word `table` has replaced by its entry (capitalised where the word was)."""
    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        new = table.get(word.lower())
        return word if new is None else (new.capitalize() if word[0].isupper() else new)

    return re.sub(r"[A-Za-z]+", swap, text)


def nudge_text(text: str) -> str:
    """The same report in a colleague's words: a few synonyms that change no finding."""
    return _swap_words(text, _SYNONYMS)


def shift_text(text: str) -> str:
    """Another site's reporting vocabulary: abbreviations and boilerplate instead of the usual words."""
    return _BOILERPLATE + _swap_words(text, _VOCABULARY)


class TextKind(ModalityKind):
    name = "text"
    nudge_says = "synonyms that change no finding"
    spec = TextSpec

    def decode(self, data: bytes, spec: TextSpec, phi_key: bytes | None = None) -> Decoded:
        return decode_text(data, spec, phi_key)

    def stats(self, value: str, spec: TextSpec) -> dict[str, float]:
        return text_stats(value)

    def expectations(self, spec: TextSpec) -> list[Expectation]:
        exp: list[Expectation] = [
            ("ExpectColumnValuesToBeBetween",
             {"column": "n_chars", "min_value": spec.min_chars, "max_value": spec.max_chars}, "critical"),
            ("ExpectColumnValuesToBeBetween", {"column": "n_words", "min_value": 2, "mostly": 0.95}, "warning"),
            ("ExpectColumnValuesToBeBetween", {"column": "non_ascii_share", "max_value": 0.3, "mostly": 0.95},
             "warning")]
        if spec.redact_phi:  # PHI leak check: nothing that looks like PHI reaches the dataset
            exp.append(("ExpectColumnValuesToBeBetween", {"column": "phi_hits", "max_value": 0}, "critical"))
        return exp

    def tensor(self, value: str, spec: TextSpec, fitted: Mapping[str, Any], options: Mapping[str, str]) -> np.ndarray:
        if options.get("text_encoder") == "minilm":
            from mmops.models.text import minilm_ids

            return minilm_ids(value, spec.max_tokens)
        return text_tensor(value, spec)

    def empty(self, spec: TextSpec) -> np.ndarray:
        return np.zeros(spec.max_tokens, dtype=np.int64)

    def units(self, value: str, spec: TextSpec, options: Mapping[str, str]) -> list[str] | None:
        if options.get("text_encoder") == "minilm":
            from mmops.models.text import minilm_tokens

            return minilm_tokens(value, spec.max_tokens)
        return _TOKEN.findall(value.lower())[: spec.max_tokens]

    def arch(self, params: Any) -> dict[str, Any]:
        from mmops.models.text import resolve_text_encoder

        return {"text_encoder": resolve_text_encoder(params.text_encoder)}

    def encoder(self, spec: TextSpec, arch: Mapping[str, Any], pretrained: bool) -> Encoder:
        from mmops.models.text import HashedBackbone, MiniLMBackbone

        if arch.get("text_encoder") == "minilm":
            return Encoder(MiniLMBackbone(pretrained), "minilm")
        return Encoder(HashedBackbone(spec.vocab_buckets, int(arch["embed_dim"])))

    def freeze_epochs(self, params: Any) -> int:
        return int(params.text_freeze_epochs)

    def wire_schema(self, spec: TextSpec) -> dict[str, Any]:
        return {"type": "string", "minLength": max(spec.min_chars, 1), "maxLength": spec.max_chars,
                "pattern": "^[^\\u0000]*\\S[^\\u0000]*$", "description": "UTF-8 text, not blank"}

    def from_wire(self, raw: Any, spec: TextSpec) -> str:
        if not isinstance(raw, str):
            raise BadInputError("expected a string")
        return check_text(raw, spec)

    def to_wire(self, data: bytes, value: str, spec: TextSpec) -> Any:
        return str(value)

    def to_file(self, value: Any, spec: TextSpec) -> tuple[bytes, str]:
        return str(value).encode("utf-8"), ".txt"

    def warnings(self, spec: TextSpec, value: Any, raw: Any) -> list[str]:
        return [f"{spec.name}: PHI redacted before the model and the log saw the text"] if value != raw else []

    shift_note = "reports in another site's vocabulary"

    def shift(self, raw: Any, spec: TextSpec) -> Any:
        return shift_text(raw)

    def blend(self, a: Any, b: Any, weight: float) -> Any | None:
        return None  # words do not mix

    def nudge(self, raw: Any, spec: TextSpec) -> Any:
        return nudge_text(raw)
