"""Dataset versions: an immutable manifest of labeled records with stratified train/val/test splits, named by
the hash of its content so that building twice from the same data yields the same version."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypedDict

from mmops.errors import BadInputError, ValidationFailedError, one_line
from mmops.records import Record

SPLITS = ("train", "val", "test")


class FileRow(TypedDict):
    """One file of a manifest row: its content-addressed blob (relative to data/), the landed file's
    sha256, and its summary statistics (the kind's `stats`)."""

    blob: str
    sha256: str
    stats: dict[str, float]


class ManifestRow(TypedDict):
    """One record of a dataset version: its key, label, split, and one file per modality it has."""

    key: str
    label: str
    split: Literal["train", "val", "test"]
    files: dict[str, FileRow]


_ROWS = TypeAdapter(list[ManifestRow])


@dataclass(frozen=True)
class Manifest:
    id: str
    domain: str
    classes: list[str]
    modalities: list[str]
    records: list[ManifestRow]  # Record.to_manifest() + {"split": ...}
    params: dict[str, Any]

    def split(self, name: str) -> list[ManifestRow]:
        return [r for r in self.records if r["split"] == name]

    @property
    def split_counts(self) -> dict[str, int]:
        return {s: len(self.split(s)) for s in SPLITS}

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "domain": self.domain, "classes": self.classes, "modalities": self.modalities,
                "params": self.params, "split_counts": self.split_counts, "records": self.records}

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """A manifest file, its rows checked against ManifestRow (BadInputError naming the first problem)."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            _ROWS.validate_python(raw["records"])
            return cls(raw["id"], raw["domain"], raw["classes"], raw["modalities"], raw["records"], raw["params"])
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise BadInputError(f"{path}: not a readable dataset manifest ({type(exc).__name__}: {exc})") from None
        except ValidationError as exc:
            raise BadInputError(f"{path}: {one_line(exc)}") from None

    def write(self, path: Path) -> None:
        from mmops.atomic import write_atomic

        write_atomic(path, json.dumps(self.to_json(), indent=1, sort_keys=True))


def stratified_splits(records: list[Record], test_size: float, val_size: float, seed: int) -> dict[str, str]:
    """key -> split. Stratified by label; each class keeps at least one record in train."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out: dict[str, str] = {}
    by_class: dict[str, list[str]] = {}
    for r in records:
        by_class.setdefault(str(r.label), []).append(r.key)
    for label in sorted(by_class):
        keys = sorted(by_class[label])
        rng.shuffle(keys)
        n = len(keys)
        n_test = min(max(1, round(n * test_size)), n - 2) if n >= 3 and test_size > 0 else 0
        n_val = min(max(1, round(n * val_size)), n - n_test - 1) if n - n_test >= 2 and val_size > 0 else 0
        for i, key in enumerate(keys):
            out[key] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


def predefined_splits(records: list[Record], val_size: float, seed: int) -> tuple[dict[str, str], bool]:
    """key -> split from the data set's own split. Records it puts in no split, and `train` ones, form the
    training pool; when the data set names no validation records, a stratified `val_size` share of the pool
    becomes validation (the test split is never touched). -> (splits, whether val was carved from train)."""
    out = {r.key: r.split for r in records if r.split in ("val", "test")}
    pool = [r for r in records if r.key not in out]
    carve = "val" not in out.values()
    if carve:
        out |= stratified_splits(pool, 0.0, val_size, seed)
    else:
        out |= {r.key: "train" for r in pool}
    return out, carve


def build_manifest(
    domain: str, classes: list[str], modalities: list[str], records: list[Record],
    test_size: float, val_size: float, seed: int,
) -> Manifest:
    """The dataset version of the labeled records. Split: the data set's own when any record has one (a
    fixed test set: patients, a published benchmark split), recorded in the version's params; else
    stratified by label with `test_size` and `val_size`."""
    labeled = [r for r in records if r.label is not None]
    if not labeled:
        raise ValidationFailedError(f"{domain}: no labeled records to build a dataset from")
    params: dict[str, Any] = {"test_size": test_size, "val_size": val_size, "seed": seed}
    if any(r.split for r in labeled):
        splits, carved = predefined_splits(labeled, val_size, seed)
        if "test" not in splits.values():
            raise ValidationFailedError(f"{domain}: the data set's own split has no test records; name some "
                                        "`test` (a split folder or the labels file's split column)")
        params = {"split": "predefined", "val_from_train": carved, "val_size": val_size, "seed": seed}
    else:
        splits = stratified_splits(labeled, test_size, val_size, seed)
    rows = [{**r.to_manifest(), "split": splits[r.key]} for r in labeled]
    digest = hashlib.sha256(
        json.dumps({"domain": domain, "classes": classes, "records": rows, "params": params},
                   sort_keys=True).encode()
    ).hexdigest()
    return Manifest(f"{domain}-{digest[:16]}", domain, classes, modalities, cast(list[ManifestRow], rows), params)
