"""The catalog schema: metadata and lineage. Bytes live in data/ (DVC); rows refer to them by content hash."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Sample(Base):
    """One multimodal record (an exam, a door event, a machine cycle) of a domain."""

    __tablename__ = "samples"
    __table_args__ = (UniqueConstraint("domain", "sample_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    domain: Mapped[str] = mapped_column(String(64), index=True)
    sample_key: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # the data set's own split (train / val / test), from a split folder or a labels file's split column;
    # NULL: the platform splits the record
    split: Mapped[str | None] = mapped_column(String(8))

    files: Mapped[list[SampleFile]] = relationship(back_populates="sample")
    labels: Mapped[list[Label]] = relationship(back_populates="sample")


class SampleFile(Base):
    """One landed file: ingested (`ok`; `duplicate_of` links same content under another sample) or
    `quarantined` with a reason."""

    __tablename__ = "files"
    __table_args__ = (UniqueConstraint("domain", "source_path", "sha256"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[int | None] = mapped_column(ForeignKey("samples.id"), index=True)
    domain: Mapped[str] = mapped_column(String(64), index=True)
    modality: Mapped[str | None] = mapped_column(String(64))
    source_path: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64), index=True)  # of the landed bytes
    # of the stored bytes (differs from sha256 when ingest de-identified or redacted the file)
    content_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    source_version: Mapped[str | None] = mapped_column(String(255))  # mtime_ns / ETag seen at ingest
    blob_path: Mapped[str | None] = mapped_column(String(1024))
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    duplicate_of: Mapped[int | None] = mapped_column(ForeignKey("files.id"))
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)
    notes: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # what ingest changed (PHI removed, resampled)
    ingested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    sample: Mapped[Sample | None] = relationship(back_populates="files")


LABEL_KINDS = ("human", "file", "model", "rule")  # precedence, highest first


class Label(Base):
    """One label from one source, with provenance. A source's current label for a record has
    `superseded_at` NULL; a changed label supersedes the old row instead of overwriting it."""

    __tablename__ = "labels"
    __table_args__ = (
        Index("uq_labels_current", "sample_id", "source", unique=True,
              sqlite_where=text("superseded_at IS NULL"), postgresql_where=text("superseded_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"), index=True)
    label: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16), default="file")  # human | file | model | rule
    source: Mapped[str] = mapped_column(String(255))  # file:labels.csv, human:alice, model:medical@v3, rules
    annotator: Mapped[str | None] = mapped_column(String(255))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    confidence: Mapped[float | None] = mapped_column(Float)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # rule votes, probabilities, task ids
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    superseded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    sample: Mapped[Sample] = relationship(back_populates="labels")


class ReviewItem(Base):
    """A record waiting for a human label, ranked by how unsure the current model (or the rules) is."""

    __tablename__ = "review_queue"

    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"), unique=True)
    domain: Mapped[str] = mapped_column(String(64), index=True)
    score: Mapped[float] = mapped_column(Float)  # higher = more uncertain = review first
    method: Mapped[str] = mapped_column(String(32))  # entropy | margin | rule_margin | none
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    prediction: Mapped[str | None] = mapped_column(String(128))
    probabilities: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | exported
    refreshed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    exported_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ValidationRun(Base):
    """One run of a validation gate over a domain's labeled samples (identified by their fingerprint)."""

    __tablename__ = "validation_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    domain: Mapped[str] = mapped_column(String(64), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    success: Mapped[bool] = mapped_column(Boolean)
    n_expectations: Mapped[int] = mapped_column(Integer)
    failed: Mapped[list[Any]] = mapped_column(default=list)
    report_path: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DatasetVersion(Base):
    """An immutable dataset: a manifest of (sample, files, label, split), named by its content hash."""

    __tablename__ = "dataset_versions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    domain: Mapped[str] = mapped_column(String(64), index=True)
    manifest_path: Mapped[str] = mapped_column(String(1024))
    n_samples: Mapped[int] = mapped_column(Integer)
    split_counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    validation_run_id: Mapped[int | None] = mapped_column(ForeignKey("validation_runs.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TrainingRun(Base):
    __tablename__ = "training_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    domain: Mapped[str] = mapped_column(String(64), index=True)
    dataset_version_id: Mapped[str] = mapped_column(ForeignKey("dataset_versions.id"))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    params_hash: Mapped[str] = mapped_column(String(64))
    git_commit: Mapped[str | None] = mapped_column(String(64))
    device: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    checkpoint_path: Mapped[str | None] = mapped_column(String(1024))
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("domain", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    domain: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    training_run_id: Mapped[int] = mapped_column(ForeignKey("training_runs.id"))
    checkpoint_sha256: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    bento_model_tag: Mapped[str | None] = mapped_column(String(255))
    bento_tag: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelAlias(Base):
    """champion / challenger pointers, one row per (domain, alias)."""

    __tablename__ = "model_aliases"
    __table_args__ = (UniqueConstraint("domain", "alias"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    domain: Mapped[str] = mapped_column(String(64))
    alias: Mapped[str] = mapped_column(String(32))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class PromotionEvent(Base):
    """The audit log of the registry: every champion decision (automatic or by hand), never updated."""

    __tablename__ = "promotion_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    domain: Mapped[str] = mapped_column(String(64), index=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    previous_champion_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    action: Mapped[str] = mapped_column(String(16))  # promoted | rejected | passed_gate | manual | released | rollback
    metric: Mapped[str] = mapped_column(String(32))
    challenger_score: Mapped[float | None] = mapped_column(Float)
    champion_score: Mapped[float | None] = mapped_column(Float)
    margin: Mapped[float] = mapped_column(Float, default=0.0)
    # the paired bootstrap interval of challenger - champion on the holdout (mmops/promotion.py)
    ci_low: Mapped[float | None] = mapped_column(Float)
    ci_high: Mapped[float | None] = mapped_column(Float)
    holdout: Mapped[str | None] = mapped_column(String(64))  # dataset version whose test split both were scored on
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEvent(Base):
    """Who did what to a domain's data and models: ingest, labels, dataset versions, training, registration,
    promotion, packaging, deployment, quarantine. Appended in the transaction of what it records, never updated."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_domain_at", "domain", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    domain: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255))  # what it acted on: "dataset:3f2a...", "model:v4", a tag
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # the ledger (mmops/audit.py): each event's sha256 covers its fields and the previous event's hash
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64), unique=True)


class AuditHead(Base):
    """The ledger's newest event (one row): appends take its row lock, so that the chain never forks, and
    deleting the newest events breaks the match between the chain and its head."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    events: Mapped[int] = mapped_column(Integer, default=0)
    last_id: Mapped[int | None] = mapped_column(Integer)
    last_hash: Mapped[str | None] = mapped_column(String(64))


class DriftReport(Base):
    __tablename__ = "drift_reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    domain: Mapped[str] = mapped_column(String(64), index=True)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    reference_dataset_version_id: Mapped[str] = mapped_column(ForeignKey("dataset_versions.id"))
    current_source: Mapped[str] = mapped_column(String(255))
    n_reference: Mapped[int] = mapped_column(Integer)
    n_current: Mapped[int] = mapped_column(Integer)
    drift_share: Mapped[float] = mapped_column(Float)
    drifted: Mapped[bool] = mapped_column(Boolean)
    drifted_columns: Mapped[list[Any]] = mapped_column(default=list)
    html_path: Mapped[str] = mapped_column(String(1024))
    json_path: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
