"""What each pipeline stage returns: one typed, frozen result per stage, read by attribute inside mmops.

JSON is for the faces only: the CLI prints `to_json()` (`--json`), an Airflow task hands `to_json()` to the
next task through XCom, which reads it back with `model_validate` (so a changed field fails loudly at the
boundary, not three tasks later). Nested summaries that a stage only passes on (a labels file's import, the
rules' votes, Evidently's paths) stay plain JSON objects.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Json = dict[str, Any]


class StageResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def to_json(self, **dump: Any) -> Json:
        """The result as the faces show and hand it on (field aliases as the names); `dump`: model_dump's
        include or exclude."""
        return self.model_dump(mode="json", by_alias=True, **dump)


class Planned(StageResult):
    """plan_ingest: the new or changed landed files, in batches (paths only)."""

    domain: str
    batches: list[list[str]]
    files: int


class Ingested(StageResult):
    domain: str
    seen: int
    ingested: int  # new files stored (duplicates included)
    skipped: int  # already processed by an earlier run (ingested, quarantined or purged)
    duplicates: int  # ingested files whose content another file already had
    quarantined: int
    new_records: int  # records that got their first file in this run
    batches: int
    reasons: dict[str, str]  # source path -> why it was quarantined
    seconds: dict[str, float]  # wall time per phase (not in the summary file: it is a DVC output)


class Labeled(StageResult):
    domain: str
    files: list[Json]  # one import summary per labels file
    ground_truth: list[Json]
    annotations: list[Json]  # one per Label Studio export
    rules: Json | None  # the labeling functions' votes
    labeled: int  # records with a resolved label
    by_kind: dict[str, int]  # chosen labels by source kind (human, file, model, rule)
    trusted: int  # labeled by a kind that params' label.train_on trusts
    conflicts: int
    disagreements: int


class Exported(StageResult):
    """export_tasks: the most uncertain queued records as Label Studio tasks."""

    domain: str
    tasks: int
    path: str
    config: str


class Prelabeled(StageResult):
    domain: str
    model: Json | None  # the champion's pre-label summary; None without a model
    queue: Json  # the review queue after re-ranking
    disagreements: int
    export: Exported | None = None


class Validated(StageResult):
    """The gate's verdict on the labeled records (a failed gate raises instead)."""

    domain: str
    fingerprint: str
    success: bool
    n_expectations: int
    failed: list[str]
    warnings: list[str]
    n_records: int
    n_labeled: int
    data_docs: str | None


class Profiled(StageResult):
    """validate --profile: the suites file generated from a dataset version."""

    domain: str
    suites_file: str
    expectations: int
    reference: str


class Built(StageResult):
    dataset_version: str
    n_samples: int
    split_counts: dict[str, int]
    manifest: str


class Trained(StageResult):
    training_run: int
    dataset_version: str
    model_dir: str
    device: str
    epochs_run: int
    best_epoch: int
    val_metrics: dict[str, float | None]  # None: undefined (no anomalous validation records for an AUROC)
    checkpoint_sha256: str
    params_hash: str
    samples_per_s: float
    data_wait_share: float
    world_size: int
    resumed_from_epoch: int
    alignment: dict[str, dict[str, float]]


class Evaluated(StageResult):
    """The test-split figures the task headlines (classification: accuracy, macro_f1, auroc, ece), the
    registry's decision, and the report files. Its JSON is flat, headline metrics and plots at the top."""

    headline: dict[str, float | None]
    model_version: int
    promoted: bool
    reason: str
    metrics: str  # metrics.json
    release: bool = False  # passed the gate in a staged domain: the release DAG takes it on
    plots: dict[str, str]

    def to_json(self, **dump: Any) -> Json:
        data = self.model_dump(mode="json", exclude={"headline", "plots"})
        return {**self.headline, **data, **self.plots}

    @classmethod
    def from_json(cls, data: Json) -> Evaluated:
        """Back from its flat JSON: the other numbers (or nulls) are the headline, the other strings the plots."""
        fixed = {k: data[k] for k in ("model_version", "promoted", "reason", "metrics")}
        fixed["release"] = bool(data.get("release", False))  # absent from results written before staging
        rest = {k: v for k, v in data.items() if k not in fixed}
        return cls(headline={k: v for k, v in rest.items() if not isinstance(v, str)},
                   plots={k: v for k, v in rest.items() if isinstance(v, str)}, **fixed)


class Packaged(StageResult):
    model_tag: str
    bento_tag: str | None
    model_version: int


class Monitored(StageResult):
    drift_share: float
    drifted: bool
    drifted_groups: list[str]
    drifted_columns: list[str]
    drifted_embeddings: list[str]
    prediction_drifted: bool
    n_reference: int
    n_current: int
    skipped_lines: int
    performance: Json  # accuracy on the ground truth that came in, and whether it dropped
    alerts: Json = {}  # what the task kind watches beyond drift (a detector: its flagged share), each with `alert`
    dashboard: Json
    reference_dataset_version: str
    html: str
    json_path: str = Field(alias="json")  # the verdict's JSON report
    embedding_html: dict[str, str]

    @property
    def degraded(self) -> bool:
        return bool(self.performance.get("degraded"))
