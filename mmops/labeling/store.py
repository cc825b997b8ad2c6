"""Labels with provenance, and how one label per record is chosen from many.

Every label row says where it came from: `kind` (human, file, model, rule), `source` (`human:alice`,
`file:labels.csv`, `model:medical@v3`, `rules`), the annotator or model version, its confidence and when. A
source changing its mind supersedes its previous row (kept, with `superseded_at`), never overwrites it.

Precedence: human > file > model > rule. Within humans, the majority of annotators wins and a tie goes to
the most recent; within the other kinds the most recent source wins. Disagreements are reported: a
*conflict* is two human or file sources disagreeing (someone must look), a *disagreement* is a model or rule
label differing from the chosen one (often a label error worth reviewing).
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mmops.catalog import Label, Sample
from mmops.catalog.models import LABEL_KINDS

TRUSTED_KINDS = ("human", "file")  # what training uses unless params.yaml says otherwise


def put_label(session: Session, sample_id: int, label: str, kind: str, source: str, *,
              annotator: str | None = None, model_version_id: int | None = None, confidence: float | None = None,
              detail: dict[str, Any] | None = None, at: datetime | None = None) -> str:
    """Record `source`'s label for a record. -> 'imported' (first from this source), 'updated' (the source
    changed its mind; the old row is superseded) or 'unchanged'."""
    if kind not in LABEL_KINDS:
        raise ValueError(f"label kind {kind!r} is not one of {LABEL_KINDS}")
    current = session.scalar(select(Label).where(Label.sample_id == sample_id, Label.source == source,
                                                 Label.superseded_at.is_(None)))
    if current is not None and current.label == label:
        if confidence is not None or detail is not None:  # the same answer, its latest numbers
            current.confidence, current.detail = confidence, detail
        return "unchanged"
    now = at or datetime.now(UTC)
    if current is not None:
        current.superseded_at = now
        session.flush()  # the partial unique index allows one current row per source
    session.add(Label(sample_id=sample_id, label=label, kind=kind, source=source, annotator=annotator,
                      model_version_id=model_version_id, confidence=confidence, detail=detail, created_at=now))
    return "imported" if current is None else "updated"


@dataclass(frozen=True)
class Vote:
    label: str
    kind: str
    source: str
    created_at: datetime


@dataclass
class Resolved:
    key: str
    label: str
    kind: str
    source: str
    votes: list[Vote] = field(default_factory=list)

    @property
    def conflict(self) -> bool:
        """Human or file sources that disagree with each other."""
        return len({v.label for v in self.votes if v.kind in ("human", "file")}) > 1

    def disagreement(self, agrees: Callable[[str, str], bool] = operator.eq) -> bool:
        """A model or rule label that `agrees` (vote, chosen) says contradicts the chosen one."""
        return any(not agrees(v.label, self.label) for v in self.votes if v.kind in ("model", "rule"))

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "kind": self.kind, "source": self.source,
                "votes": [{"label": v.label, "kind": v.kind, "source": v.source} for v in self.votes]}


def _choose(votes: list[Vote]) -> Vote:
    for kind in LABEL_KINDS:
        tier = [v for v in votes if v.kind == kind]
        if not tier:
            continue
        if kind == "human":
            counts = Counter(v.label for v in tier)
            top = max(counts.values())
            tier = [v for v in tier if counts[v.label] == top]
        return max(tier, key=lambda v: v.created_at)
    raise ValueError("no votes")


def resolve(session: Session, domain: str) -> dict[int, Resolved]:
    """sample id -> the chosen label and every current vote."""
    votes: dict[int, list[Vote]] = {}
    keys: dict[int, str] = {}
    for sample_id, key, label, kind, source, created in session.execute(
        select(Label.sample_id, Sample.sample_key, Label.label, Label.kind, Label.source, Label.created_at)
        .join(Sample).where(Sample.domain == domain, Label.superseded_at.is_(None))
    ):
        keys[sample_id] = key
        votes.setdefault(sample_id, []).append(Vote(label, kind, source, _aware(created)))
    out = {}
    for sample_id, vs in votes.items():
        best = _choose(vs)
        out[sample_id] = Resolved(keys[sample_id], best.label, best.kind, best.source, sorted(vs, key=_order))
    return out


def _order(v: Vote) -> tuple[int, str]:
    return LABEL_KINDS.index(v.kind), v.source


def _aware(when: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were stored in UTC."""
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def report(resolved: dict[int, Resolved], agrees: Callable[[str, str], bool] = operator.eq) -> dict[str, Any]:
    """Counts per kind of the chosen labels, and the records whose sources disagree (a model's or a rule's
    label that `agrees` says contradicts the chosen one: the task kind's judgement, mmops.tasks)."""
    conflicts = [r.to_json() for r in resolved.values() if r.conflict]
    disagreements = [r.to_json() for r in resolved.values() if r.disagreement(agrees) and not r.conflict]
    return {
        "labeled": len(resolved),
        "by_kind": dict(Counter(r.kind for r in resolved.values())),
        "conflicts": sorted(conflicts, key=lambda c: c["key"]),
        "disagreements": sorted(disagreements, key=lambda c: c["key"]),
    }
