"""Settings: deployment settings from MMOPS_* environment variables, experiment parameters from params.yaml.

Nothing is read at import time; call `get_settings()` / `load_params()` where needed.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mmops.errors import ConfigError, one_line


class Settings(BaseSettings):
    """Where things live. Every path defaults to a folder inside the project (`MMOPS_HOME`, default cwd)."""

    model_config = SettingsConfigDict(env_prefix="MMOPS_", frozen=True)

    home: Path = Field(default_factory=Path.cwd)
    database_url: str | None = None
    params_file: Path | None = None
    # Where files land: a folder, or an fsspec URL (s3://bucket/landing) holding one folder per domain.
    landing_url: str | None = None
    # Key for PHI pseudonyms (DICOM patient IDs, UIDs). Unset: a random key kept in var/pseudonym.key. Keep it
    # secret and stable: the same patient gets the same pseudonym only under the same key.
    pseudonym_key: str | None = Field(None, repr=False)

    @cached_property
    def root(self) -> Path:
        return self.home.resolve()

    @property
    def landing_dir(self) -> Path:
        return self.root / "landing"

    def landing(self, domain: str) -> str:
        """The landing area of one domain, as a path or URL."""
        if self.landing_url:
            return f"{self.landing_url.rstrip('/')}/{domain}"
        return str(self.landing_dir / domain)

    def phi_key(self) -> bytes:
        if self.pseudonym_key:
            return self.pseudonym_key.encode()
        path = self.var_dir / "pseudonym.key"
        if not path.exists():
            import os
            import secrets

            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
        return path.read_text().strip().encode()

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def var_dir(self) -> Path:
        return self.root / "var"

    @property
    def reports_dir(self) -> Path:
        return self.root / "monitoring" / "reports"

    @property
    def bentoml_home(self) -> Path:
        """The BentoML model and bento store, unless BENTOML_HOME names another."""
        return self.var_dir / "bentoml"

    @property
    def prediction_log_dir(self) -> Path:
        return self.var_dir / "predictions"

    @property
    def catalog_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / 'catalog.db'}"

    @property
    def params_path(self) -> Path:
        return self.params_file or (self.root / "params.yaml")


ENV_FILE = ".env"  # in the project folder: deployment settings without exporting them (git-ignored)


def get_settings() -> Settings:
    """Settings from MMOPS_* environment variables and, under them, the project's `.env` file (MMOPS_HOME/.env,
    the same names; other names in it are left to the tools they belong to): a catalog URL or pseudonym key
    set once for every face (CLI, DAG tasks, the service)."""
    import os

    try:
        base = Settings()
    except ValidationError as exc:
        raise ConfigError(f"MMOPS_* environment settings: {one_line(exc)}") from exc
    env_file = base.root / ENV_FILE
    if not env_file.is_file():
        return base
    from dotenv import dotenv_values

    values = {k: v for k, v in dotenv_values(env_file).items() if k.startswith("MMOPS_") and v is not None}
    fields = {f"MMOPS_{name.upper()}": name for name in Settings.model_fields if name != "home"}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{env_file}: {', '.join(unknown)} cannot be set here: the file holds "
                          f"{', '.join(sorted(fields))}; MMOPS_HOME (where the file is found) and the service's "
                          "settings (MMOPS_API_TOKEN, MMOPS_DOMAIN, ...) come from the environment")
    overrides: dict[str, Any] = {fields[k]: v for k, v in values.items() if k not in os.environ}
    try:
        return Settings(**overrides) if overrides else base
    except ValidationError as exc:
        raise ConfigError(f"{env_file}: {one_line(exc)}") from exc


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BuildParams(_Frozen):
    test_size: float = Field(0.2, gt=0, lt=0.5)
    val_size: float = Field(0.2, gt=0, lt=0.5)


class AnomalyParams(_Frozen):
    """Packs whose task is anomaly detection (mmops/tasks/anomaly): the memory banks and the threshold."""

    fpr: float = Field(0.05, gt=0, lt=0.5)  # the false-positive rate the threshold is calibrated at
    coreset: float = Field(0.2, gt=0, le=1)  # share of the normal feature vectors a memory bank keeps
    k: int = Field(1, ge=1, le=50)  # nearest neighbours a distance averages over
    window: float = Field(0.5, gt=0, le=1)  # a sensor sub-window, as a share of the modality's length
    bank_stride: int = Field(4, ge=1)  # samples between the sub-windows the bank keeps
    score_stride: int = Field(4, ge=1)  # samples between the sub-windows a record is scored on
    image_size: int = Field(128, ge=32, le=512)  # images are resized to this side for patch features
    frame_size: int = Field(64, ge=32, le=512)  # ... and video frames to this one (8 x 8 patches at 64)


class TrainParams(_Frozen):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    embed_dim: int = Field(64, ge=4)
    fusion: Literal["concat", "gated", "attention"] = "concat"
    modality_dropout: float = Field(0.1, ge=0, lt=1)
    patience: int = Field(6, ge=1)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    amp: bool = True  # autocast on CUDA: bf16 where supported, else fp16 with a gradient scaler
    # encoders (see docs/models.md)
    image_encoder: Literal["resnet", "mobilenet_v2", "efficientnet_lite0"] = "mobilenet_v2"
    image_size: int = Field(64, ge=16, le=512)  # input side of the pretrained image backbones
    sensor_encoder: Literal["cnn", "cnn_gru", "cnn_transformer"] = "cnn_gru"
    text_encoder: Literal["auto", "minilm", "hashed"] = "auto"  # auto: minilm when its package is installed
    pretrained: bool = True  # ImageNet / MiniLM weights; false = the same architectures from scratch
    # transfer learning: pretrained backbones are frozen for the first N epochs, then fine-tuned at
    # lr * backbone_lr_mult (discriminative learning rates); -1 keeps them frozen (features computed once)
    freeze_epochs: int = Field(3, ge=-1)
    text_freeze_epochs: int = Field(-1, ge=-1)  # MiniLM: fine-tuning 22M parameters wants a GPU
    video_freeze_epochs: int = Field(-1, ge=-1)  # per-frame image backbone: fine-tuning it costs frames x images
    backbone_lr_mult: float = Field(0.1, gt=0, le=1)
    # a local safetensors backbone checkpoint per modality (name or kind: image, sensor, text), e.g. your
    # own ImageNet/medical backbone or the output of `mmops pretrain`; loaded strictly
    init_weights: dict[str, str] = Field(default_factory=dict)
    grad_accum: int = Field(1, ge=1)  # optimizer step every N batches (effective batch = batch_size * N)
    clip_norm: float = Field(5.0, gt=0)
    align_weight: float = Field(0.1, ge=0)  # InfoNCE between modality embeddings (0 = off)
    proj_dim: int = Field(32, ge=0)  # width of the alignment projection heads
    temperature: float = Field(0.1, gt=0)
    channels_last: bool = True  # image tensors in NHWC memory layout (faster convolutions on GPUs)
    anomaly: AnomalyParams = AnomalyParams()  # task: anomaly packs


class IngestParams(_Frozen):
    batch_files: int = Field(256, ge=1, le=100_000)  # files per catalog transaction (and per Airflow task)
    workers: int = Field(0, ge=0, le=64)  # decode workers; 0 = one per CPU (at most 8)
    # thread | process | auto (processes for runs of 1,000+ new files from a local folder, 64+ after the first
    # such run; see mmops.ingest.pool)
    executor: Literal["auto", "thread", "process"] = "auto"


class LabelParams(_Frozen):
    # label kinds training may use, in precedence order human > file > model > rule
    train_on: tuple[Literal["human", "file", "model", "rule"], ...] = ("human", "file")
    uncertainty: Literal["entropy", "margin"] = "entropy"
    export_limit: int = Field(100, ge=1)  # Label Studio tasks per export


class MonitorParams(_Frozen):
    drift_share_threshold: float = Field(0.5, gt=0, le=1)
    window_hours: float = Field(24.0, ge=0)  # the prediction-log lines a check reads: the last N hours (0: all)
    # delayed ground truth: performance has degraded when the served accuracy, on at least min_labeled records
    # whose labels came in, is more than accuracy_drop below the model's test accuracy
    accuracy_drop: float = Field(0.1, ge=0, le=1)
    min_labeled: int = Field(20, ge=1)
    # anomaly detectors: alert when the flagged share departs from the calibrated false-positive rate
    # (two-sided beta-binomial test, the threshold's own sampling error counted; p below this)
    flagged_share_alpha: float = Field(0.01, gt=0, lt=1)


class PromoteParams(_Frozen):
    # a challenger becomes champion when it beats the champion, both scored on the same test split, by margin
    metric: Literal["macro_f1", "accuracy", "auroc"] = "macro_f1"
    margin: float = Field(0.0, ge=0, le=1)
    # ... and the paired bootstrap interval of the difference lies above 0 (mmops/promotion.py; 0: no interval)
    resamples: int = Field(1000, ge=0, le=100_000)
    confidence: float = Field(0.95, gt=0.5, lt=1)


class ReleaseParams(_Frozen):
    """The release path of a challenger that passed the promotion gate (docs/operations.md, Releasing)."""

    # domains whose challenger, once it passes the gate, is released by the release DAG (shadow -> approval ->
    # canary -> champion) instead of being made champion by `mmops evaluate`
    staged: tuple[str, ...] = ("medical",)
    # ... and of those, the domains where a person approves it in Airflow before the champion changes
    approval: tuple[str, ...] = ("medical",)
    # shadow: the release DAG waits for this many mirrored records (at most shadow_minutes) before it asks
    shadow_records: int = Field(200, ge=1)
    shadow_minutes: float = Field(60.0, gt=0)
    shadow_duty: float = Field(0.25, gt=0, le=1)  # the share of the time the shadow may compute (serving/shadow.py)
    # canary: its share of the records (sticky by id), the records it must answer before it may be promoted
    # (at most canary_minutes), and the bounds past which the service ends it (mmops/serving/canary.py)
    canary_share: float = Field(0.1, gt=0, le=0.5)
    canary_records: int = Field(200, ge=1)
    canary_minutes: float = Field(60.0, gt=0)
    max_error_increase: float = Field(0.02, ge=0, le=1)
    max_latency_ratio: float = Field(2.0, ge=1)
    max_prediction_shift: float = Field(0.25, gt=0, le=1)

    @model_validator(mode="after")
    def _approval_is_staged(self) -> ReleaseParams:
        if not set(self.approval) <= set(self.staged):
            raise ValueError(f"release.approval {sorted(set(self.approval) - set(self.staged))} must be in "
                             "release.staged: approval is a step of the release DAG")
        return self


class ExplainParams(_Frozen):
    # the evaluation report's explanations page (artifacts/<domain>/explanations/): this many of the test
    # records the model was surest of, and as many it was least sure of (0: no page)
    report_records: int = Field(2, ge=0, le=20)


class ServeParams(_Frozen):
    port: int = Field(3000, ge=1, le=65535)
    # domain -> what answers in its service: torch (eager, the default), onnx (ONNX Runtime), int8 (ONNX Runtime,
    # int8 weights); packaging checks it against eager torch on the test split (mmops/runtimes/)
    runtime: dict[str, Literal["torch", "onnx", "int8"]] = Field(default_factory=dict)


BUNDLED_PACKS: dict[str, str | None] = {"medical": "medical-cxr", "security": "security-faces",
                                        "industrial": "industrial-imu", "surveillance": "surveillance-av"}


class Params(_Frozen):
    """params.yaml, validated. Unknown keys are rejected so that a typo never silently does nothing."""

    seed: int = 42
    # domain -> the bundled data pack `mmops data pull` lands for it; None (`~` in YAML): you land its files
    packs: dict[str, str | None] = Field(default_factory=lambda: dict(BUNDLED_PACKS))
    ingest: IngestParams = IngestParams()
    label: LabelParams = LabelParams()
    promote: PromoteParams = PromoteParams()
    release: ReleaseParams = ReleaseParams()
    build: BuildParams = BuildParams()
    train: TrainParams = TrainParams()
    monitor: MonitorParams = MonitorParams()
    explain: ExplainParams = ExplainParams()
    serve: ServeParams = ServeParams()

    @property
    def domains(self) -> list[str]:
        return list(self.packs)

    def for_domain(self, train: dict[str, Any]) -> Params:
        """These params with a domain pack's `train` overrides applied (checked as params.yaml's are)."""
        if not train:
            return self
        try:
            merged = TrainParams.model_validate({**self.train.model_dump(), **train})
        except ValidationError as exc:
            raise ConfigError(f"domain pack train overrides: {one_line(exc)}") from exc
        return self.model_copy(update={"train": merged})


_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(text: str) -> Any:
    """YAML as `yaml.safe_load` reads it, through libyaml where PyYAML has it (~10x faster: params.yaml and
    the domain packs are read by every stage)."""
    loader = _SAFE_LOADER(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_params(path: Path | None = None) -> Params:
    path = path or get_settings().params_path
    if not path.exists():
        return Params()
    try:
        raw = safe_load(path.read_text(encoding="utf-8")) or {}
        return Params.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"{path}: {one_line(exc)}") from exc


def add_domain(domain: str, path: Path | None = None, pack: str | None = None) -> bool:
    """List `domain` under `packs:` in params.yaml (with `pack`, or `~`: you land its files). The file is
    edited as text, so that its comments stay; the result must load and list the domain, else the file is
    left as it was. False when it was listed already."""
    import re

    from mmops.atomic import write_atomic

    path = path or get_settings().params_path
    params = load_params(path)
    if domain in params.packs:
        return False
    entry = f"{domain}: {pack or '~'}"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    lines = text.splitlines()
    head = next((i for i, line in enumerate(lines) if re.fullmatch(r"packs:\s*(#.*)?", line)), None)
    if head is None:
        if re.search(r"^packs:", text, re.M):
            raise ConfigError(f"{path}: write `packs:` as a block (one `domain: pack` per line) to add {domain!r}")
        block = ["packs:", *(f"  {d}: {p or '~'}" for d, p in params.packs.items()), f"  {entry}"]
        lines = [*lines, *block]
    else:
        end, indent = head, "  "
        for i in range(head + 1, len(lines)):
            if not lines[i].strip() or lines[i].lstrip().startswith("#"):
                continue
            if not lines[i].startswith((" ", "\t")):
                break
            end, indent = i, lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        lines.insert(end + 1, indent + entry)
    write_atomic(path, "\n".join(lines) + "\n")
    try:
        if domain not in load_params(path).packs:
            raise ConfigError(f"{path}: adding {domain!r} under packs did not take; add it by hand")
    except ConfigError:
        write_atomic(path, text)
        raise
    return True


def service_url(domain: str) -> str | None:
    """Where the domain's running service answers (MMOPS_SERVICE_URL_<DOMAIN>), for the DAGs' hot reloads,
    shadows and canaries."""
    import os

    return os.environ.get(f"MMOPS_SERVICE_URL_{domain.upper()}") or None
