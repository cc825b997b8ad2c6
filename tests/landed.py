"""A bundled pack landed the way `mmops data pull` lands it, and its files decoded by the domain's modality
kinds: per split, the records (modality -> value) and their labels. For tests of models that read records
directly (no catalog)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from mmops.datasets.packs import get_pack, pull
from mmops.domains import load_domain
from mmops.modalities import kind_of


def landed_splits(pack_name: str, root: Path) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[str]]]:
    landed = pull(pack_name, root).landing
    pack = load_domain(get_pack(pack_name).domain)
    records: dict[str, list[dict[str, Any]]] = {"train": [], "val": [], "test": []}
    labels: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    with (landed / "labels.csv").open() as fh:
        for row in csv.DictReader(fh):
            value = {}
            for spec in pack.modalities:
                found = list((landed / spec.name).glob(f"{row['sample_id']}.*"))
                if found:
                    value[spec.name] = kind_of(spec).decode(found[0].read_bytes(), spec).value
            records[row["split"]].append(value)
            labels[row["split"]].append(row["label"])
    return records, labels
