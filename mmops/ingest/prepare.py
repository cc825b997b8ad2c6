"""Preparing one landed file, pure work on a worker (no catalog access): read, hash, route to its record
and modality, decode and check it by its kind, and write its blob."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from mmops.domains import SPLIT_NAMES, DomainPack, split_name
from mmops.errors import BadInputError
from mmops.ingest.sources import Entry, Landing
from mmops.ingest.store import stage
from mmops.modalities import MAX_FILE_BYTES, Decoded, decode

SAMPLE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Prepared:
    entry: Entry
    data: bytes = b""  # the landed bytes (kept for a quarantine copy)
    sha256: str = ""
    modality: str | None = None
    key: str | None = None
    ext: str = ""
    split: str | None = None  # the data set's own split, from the path
    decoded: Decoded | None = None
    reason: str | None = None
    read: bool = False  # False: refused unread (a link, an oversized file), so there is no copy to keep
    content: str = ""  # sha256 of the stored bytes
    blob: str = ""  # where they are stored, relative to data/
    wrote_blob: bool = False  # this ingest created the blob (and removes it if the file ends in quarantine)
    staged: Path | None = None  # the blob's bytes under a temporary name, until the batch is published

    @property
    def stored(self) -> bytes:
        return self.decoded.stored if self.decoded and self.decoded.stored is not None else self.data


def route(pack: DomainPack, pattern: re.Pattern[str], rel: str) -> tuple[str, str, str, str | None]:
    """-> (modality, record key, extension, split) of a landed path, or BadInputError saying why not. The
    split is the data set's own, when the record pattern names one (a folder per split)."""
    match = pattern.match(rel)
    if match is None:
        raise BadInputError(f"path does not match the domain's record pattern {pattern.pattern}")
    key, modality = pack.route(match)
    given = match.groupdict().get("split")
    split = split_name(given) if given else None
    if given and split is None:
        raise BadInputError(f"split folder {given!r} is none of {sorted(SPLIT_NAMES)}")
    if modality not in pack.modality_names:
        raise BadInputError(f"unknown modality {modality!r}; {pack.name} has {', '.join(pack.modality_names)}")
    ext = Path(rel).suffix.lower()
    spec = pack.modality(modality)
    if ext not in spec.extensions:
        raise BadInputError(f"extension {ext or '(none)'} not accepted for {modality} ({', '.join(spec.extensions)})")
    if not SAMPLE_KEY.fullmatch(key):
        raise BadInputError(f"record key {key!r} has characters outside [A-Za-z0-9_.-] or is too long")
    return modality, key, ext, split


def prepare(pack: DomainPack, pattern: re.Pattern[str], landing: Landing, entry: Entry,
             phi_key: bytes | None, data_root: Path) -> Prepared:
    prep = Prepared(entry)
    try:
        if entry.problem:
            raise BadInputError(entry.problem)
        if entry.size > MAX_FILE_BYTES:
            raise BadInputError(f"file is {entry.size} bytes, over the {MAX_FILE_BYTES}-byte limit")
        prep.data = landing.read(entry.rel, MAX_FILE_BYTES)
        prep.read = True
        prep.sha256 = sha256_bytes(prep.data)
        prep.modality, prep.key, prep.ext, prep.split = route(pack, pattern, entry.rel)
        prep.decoded = decode(prep.data, pack.modality(prep.modality), phi_key=phi_key)
        stored = prep.stored
        prep.content = sha256_bytes(stored) if stored is not prep.data else prep.sha256
        prep.blob = f"raw/{pack.name}/{prep.modality}/{prep.content[:2]}/{prep.content}{prep.ext}"
        # Content-addressed, so writing before the catalog knows is safe: a crash leaves at most a blob that
        # the rerun writes again, byte for byte. Writing here spreads the I/O over the workers; the batch is
        # made durable and renamed into place at once (store.publish).
        prep.staged = stage(data_root / prep.blob, stored)
        prep.wrote_blob = prep.staged is not None
        # the decoded value is not needed any more (and would be pickled back from a worker process)
        prep.decoded = Decoded("", prep.decoded.stats, prep.decoded.stored, prep.decoded.notes)
    except BadInputError as exc:
        prep.reason = str(exc)
        prep.decoded = None
    if not prep.read:  # refused unread (a link, an oversized file): identify it by what was listed
        prep.sha256 = sha256_bytes(f"unread:{entry.rel}:{entry.size}:{entry.version}".encode())
    return prep
