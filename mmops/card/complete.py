"""The model card as its readers get it: the training card (model_card.json) completed at evaluation with
what the model was measured to do, and at packaging with who approved it.

`mmops evaluate` writes artifacts/<domain>/card/ (card.json, card.md, card.html) for the model it evaluated;
`mmops package` refreshes the approval from the registry, refuses a card with a missing field (naming it),
and puts the three files beside the weights in the BentoML store; the service reads card.json when it loads
a model, refuses to serve without a complete one, answers GET /card, and tells each prediction what the model
scored on its test split given only the modalities that record brought.
"""

from __future__ import annotations

import hashlib
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mmops.behaviour import Behaviour
from mmops.card import SHA256, ModelCard, read_typed
from mmops.domains import CardFacts, Source
from mmops.errors import ValidationFailedError

COMPLETE_FORMAT = "mmops-complete-card/1"
CARD_DIR = "card"  # artifacts/<domain>/card/
CARD_JSON, CARD_MD, CARD_HTML = "card.json", "card.md", "card.html"


class Approval(BaseModel):
    """The registry decision that made this model what it is: promoted by the gate, promoted by hand, restored
    by a rollback, or kept as a challenger (not approved as champion)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    decision: Literal["promoted", "manual", "released", "rollback", "challenger"]
    by: str = Field(min_length=1)
    at: str
    reason: str


class TrainingData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset_version: str = Field(min_length=1)
    split_counts: dict[str, int]
    raw_files: int = Field(ge=0)
    raw_files_sha256: str = Field(pattern=SHA256)  # over the sorted "<modality>/<key> <sha256>" lines
    sources: tuple[Source, ...]
    non_commercial: bool
    composed: bool


class SubsetMetrics(BaseModel):
    """The test split's records that hold every modality of the subset, shown only those."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    modalities: tuple[str, ...] = Field(min_length=1)
    n: int = Field(ge=0)
    metrics: dict[str, float | None]


class RuntimeFigures(BaseModel):
    """How the packaged model is served when not by eager torch, and its parity with eager torch on the test
    split (mmops/runtimes/parity.py): the metric both ways, the largest probability difference, file sizes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    runtime: Literal["onnx", "int8"]
    file: str
    metric: str
    n: int
    eager: float
    compiled: float
    tolerance: float
    max_probability_diff: float
    size_bytes: int
    eager_size_bytes: int

    @property
    def passed(self) -> bool:
        return abs(self.compiled - self.eager) <= self.tolerance + 1e-12


class CompleteCard(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["mmops-complete-card/1"] = "mmops-complete-card/1"  # COMPLETE_FORMAT
    domain: str
    task: str
    classes: tuple[str, ...]
    modalities: tuple[str, ...]
    checkpoint_sha256: str = Field(pattern=SHA256)
    mmops_version: str
    model_version: int | None  # the registry's version number
    intended_use: str
    intended_users: str
    training_data: TrainingData
    metrics: dict[str, float | None]  # the test split, every modality the record has
    per_class: dict[str, dict[str, float | None]]
    subsets: tuple[SubsetMetrics, ...]  # every non-empty subset of the modalities: 2^k - 1
    calibration: dict[str, float | None]
    behaviour: Behaviour | None = None  # mmops.behaviour's checks on the test split (None: evaluated before them)
    limitations: tuple[str, ...]
    approval: Approval | None
    runtime: RuntimeFigures | None = None  # served by ONNX Runtime (None: eager torch)

    @property
    def non_commercial(self) -> bool:
        return self.training_data.non_commercial

    def expected(self, present: list[str], metric: str) -> dict[str, Any] | None:
        """What the model scored on its test split with only `present` modalities: {modalities, metric, value,
        n}, or None where the card has no such subset."""
        key = tuple(m for m in self.modalities if m in present)
        for s in self.subsets:
            if s.modalities == key:
                return {"modalities": list(key), "metric": metric, "value": s.metrics.get(metric), "n": s.n}
        return None

    def missing(self, calibration_keys: tuple[str, ...]) -> list[str]:
        """The fields a complete card needs and this one lacks, each with where it comes from."""
        gaps = []
        if not self.intended_users.strip():
            gaps.append(f"intended_users (card.intended_users in the {self.domain} domain pack)")
        if not self.training_data.sources:
            gaps.append(f"training_data.sources (card.sources, each with its licence, in the {self.domain} "
                        "domain pack)")
        if self.training_data.composed and not self.limitations:
            gaps.append(f"limitations (a composed pack says how its pairing is synthetic: card.limitations in "
                        f"the {self.domain} domain pack)")
        if not self.metrics:
            gaps.append("metrics (run `mmops evaluate`)")
        wanted = set(modality_subsets(list(self.modalities)))
        if {s.modalities for s in self.subsets} != wanted:
            gaps.append(f"subsets (every one of the {len(wanted)} non-empty subsets of {list(self.modalities)}; "
                        "run `mmops evaluate`)")
        absent = [k for k in calibration_keys if self.calibration.get(k) is None]
        if absent:
            gaps.append(f"calibration ({', '.join(absent)}; run `mmops evaluate`)")
        if self.approval is None:
            gaps.append("approval (the registry's decision on this model: run `mmops evaluate`)")
        return gaps

    def require_complete(self, calibration_keys: tuple[str, ...], where: str) -> None:
        gaps = self.missing(calibration_keys)
        if gaps:
            raise ValidationFailedError(f"{where}: the model card of {self.domain} ({self.checkpoint_sha256[:12]}) "
                                        f"is incomplete; missing: {'; '.join(gaps)}")


def raw_files_digest(records: list[dict[str, Any]]) -> tuple[int, str]:
    """(how many raw files, the sha256 of their sorted "<modality>/<key> <sha256>" lines) of a dataset
    version's records."""
    lines = sorted(f"{m}/{r['key']} {f['sha256']}" for r in records for m, f in r["files"].items())
    return len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()


def modality_subsets(modalities: list[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset, in the pack's order: singles first, all of them last."""
    return [c for r in range(1, len(modalities) + 1) for c in combinations(modalities, r)]


def build_card(card: ModelCard, facts: CardFacts, task: str, manifest: Any, metrics: dict[str, Any],
               per_class: dict[str, dict[str, Any]], subsets: dict[tuple[str, ...], dict[str, Any]],
               calibration: dict[str, Any], approval: Approval | None, model_version: int | None,
               behaviour: Behaviour | None = None) -> CompleteCard:
    """The complete card of the model `card` describes, measured on `manifest`'s test split; `facts`: the
    domain pack's card section as it stands now (users, sources, limitations: editing them needs no
    retraining, a new evaluation)."""
    pack = card.pack
    n_files, digest = raw_files_digest(manifest.records)
    return CompleteCard(
        domain=card.domain, task=task, classes=tuple(card.classes), modalities=tuple(pack.modality_names),
        checkpoint_sha256=card.checkpoint_sha256, mmops_version=card.mmops_version, model_version=model_version,
        intended_use=card.intended_use, intended_users=facts.intended_users,
        training_data=TrainingData(dataset_version=card.dataset_version, split_counts=card.dataset_split_counts,
                                   raw_files=n_files, raw_files_sha256=digest, sources=facts.sources,
                                   non_commercial=facts.non_commercial, composed=facts.composed),
        metrics={k: _num(v) for k, v in metrics.items() if isinstance(v, int | float) or v is None},
        per_class={c: {k: _num(v) for k, v in row.items()} for c, row in per_class.items()},
        subsets=tuple(SubsetMetrics(modalities=s, n=int(m.get("n", 0)),
                                    metrics={k: _num(v) for k, v in m.items() if k != "n"})
                      for s, m in subsets.items()),
        calibration={k: _num(v) for k, v in calibration.items()}, behaviour=behaviour, limitations=facts.limitations,
        approval=approval)


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def read_complete(folder: Path) -> CompleteCard:
    """The complete card in `folder` (card.json), checked; NotFoundError without one."""
    return read_typed(folder / CARD_JSON, CompleteCard, COMPLETE_FORMAT, f"no model card in {folder}; run "
                      "`mmops evaluate` (and `mmops package`) first", "run `mmops evaluate` and `mmops package` again")


def read_served(folder: Path, where: str) -> CompleteCard:
    """The complete card of a packaged model, refused (ValidationFailedError naming the missing fields) where
    it is incomplete: what the service checks before it serves a model."""
    from mmops.tasks import task_of

    card = read_complete(folder)
    card.require_complete(task_of(card.task).calibration_keys, where)
    return card
