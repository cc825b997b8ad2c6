"""Labeling functions from the domain pack (`label_rules`), combined by weighted vote with abstain.

Each rule looks at one modality of a record and votes for its class or abstains (modality missing, keyword
absent, statistic outside its range). A record's rule label is the class with the largest total weight;
records with no vote, or a tie, get none. Confidence is the winner's share of the weight cast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mmops.blobs import read_blob
from mmops.catalog import Label, Sample, SampleFile
from mmops.domains import DomainPack, LabelRule
from mmops.labeling.store import put_label

SOURCE = "rules"


@dataclass
class RuleSummary:
    domain: str
    rules: int
    records: int = 0
    voted: int = 0  # records that got a rule label
    abstained: int = 0
    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    fired: dict[str, int] = field(default_factory=dict)  # rule -> records it voted on


def _keyword_pattern(rule: LabelRule) -> re.Pattern[str]:
    words = sorted((re.escape(k.lower()).replace(r"\ ", r"\s+") for k in rule.keywords), key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(words) + r")\b", re.IGNORECASE)


def vote(rules: tuple[LabelRule, ...], record: dict[str, dict[str, Any]]) -> tuple[str | None, float, dict[str, str]]:
    """record: modality -> {"stats": {...}, "text": str | None}. -> (label or None, confidence, rule -> vote)."""
    fired: dict[str, str] = {}
    weights: dict[str, float] = {}
    for rule in rules:
        part = record.get(rule.modality)
        if part is None:
            continue
        if rule.kind == "keywords":
            hit = part.get("text") is not None and _keyword_pattern(rule).search(part["text"]) is not None
        else:
            value = part["stats"].get(rule.stat or "")
            hit = value is not None and (rule.above is None or value > rule.above) and (
                rule.below is None or value < rule.below)
        if hit:
            fired[rule.name] = rule.label
            weights[rule.label] = weights.get(rule.label, 0.0) + rule.weight
    if not weights:
        return None, 0.0, fired
    ranked = sorted(weights.items(), key=lambda kv: kv[1], reverse=True)
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None, 0.0, fired
    return ranked[0][0], ranked[0][1] / sum(weights.values()), fired


def apply_rules(session: Session, pack: DomainPack, data_root: Path) -> RuleSummary:
    """Vote on every record of the domain; store the result as kind `rule` (source `rules`)."""
    summary = RuleSummary(domain=pack.name, rules=len(pack.label_rules))
    if not pack.label_rules:
        return summary
    text_modalities = {r.modality for r in pack.label_rules if r.kind == "keywords"}
    records: dict[int, dict[str, dict[str, Any]]] = {}
    for sample_id, modality, stats, blob in session.execute(
        select(SampleFile.sample_id, SampleFile.modality, SampleFile.stats, SampleFile.blob_path)
        .join(Sample).where(Sample.domain == pack.name, SampleFile.status == "ok")
    ):
        text = None
        if modality in text_modalities and blob:
            text = read_blob(data_root, blob).decode("utf-8")
        records.setdefault(sample_id, {})[modality] = {"stats": stats or {}, "text": text}
    current = {row.sample_id: row for row in session.scalars(select(Label).join(Sample).where(
        Sample.domain == pack.name, Label.source == SOURCE, Label.superseded_at.is_(None)))}
    for sample_id, record in sorted(records.items()):
        summary.records += 1
        label, confidence, fired = vote(pack.label_rules, record)
        for name in fired:
            summary.fired[name] = summary.fired.get(name, 0) + 1
        if label is None:
            summary.abstained += 1
            if sample_id in current:  # the rules no longer say anything: retract, keep the history
                current[sample_id].superseded_at = datetime.now(UTC)
            continue
        summary.voted += 1
        outcome = put_label(session, sample_id, label, "rule", SOURCE, confidence=round(confidence, 4),
                            detail={"votes": fired})
        setattr(summary, outcome, getattr(summary, outcome) + 1)
    return summary
