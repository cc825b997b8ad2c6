"""Modality kinds: how a record's file of each kind is decoded and checked, summarised, validated, turned into
a model input, encoded, sent over HTTP, shifted in the field and shown to a labeler. One module per kind
(sensor.py, image.py, text.py), each a `ModalityKind` registered in registry.py; plug-ins add their own.

Ingest, training, serving and monitoring all read a record through here, so it is read the same way
everywhere. Decoders take bytes (what lands in a folder or arrives over HTTP) and raise BadInputError with a
reason a person can act on.
"""

from __future__ import annotations

from typing import Any

from mmops.errors import BadInputError
from mmops.modalities.base import MAX_FILE_BYTES, Decoded, Encoder, Expectation, ModalityKind, ModalitySpec
from mmops.modalities.registry import kind_of, kinds, parse_spec, register

__all__ = ["MAX_FILE_BYTES", "Decoded", "Encoder", "Expectation", "ModalityKind", "ModalitySpec", "decode",
           "kind_of", "read_value", "kinds", "parse_spec", "register", "summary_stats"]


def decode(data: bytes, spec: ModalitySpec, phi_key: bytes | None = None) -> Decoded:
    """Decode and check one file's bytes; the returned stats are the record's summary features.

    With `phi_key` (ingest), identifying data is removed (DICOM de-identified, text redacted) and `stored`
    holds the bytes to keep; without it (reading stored blobs back) files are taken as they are.
    """
    if len(data) > MAX_FILE_BYTES:
        raise BadInputError(f"file is {len(data)} bytes, over the {MAX_FILE_BYTES}-byte limit")
    return kind_of(spec).decode(data, spec, phi_key)


def read_value(data: bytes, spec: ModalitySpec) -> Any:
    """A stored or sent file's decoded, checked value, without its statistics (see ModalityKind.read)."""
    if len(data) > MAX_FILE_BYTES:
        raise BadInputError(f"file is {len(data)} bytes, over the {MAX_FILE_BYTES}-byte limit")
    return kind_of(spec).read(data, spec)


def summary_stats(value: Any, spec: ModalitySpec) -> dict[str, float]:
    return kind_of(spec).stats(value, spec)
