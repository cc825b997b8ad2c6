"""One function per stage: the single entry point that the CLI, dvc.yaml, the Airflow DAGs and tests call.

Each stage takes a domain name, reads its inputs from the catalog and the project folders, writes its outputs
under artifacts/<domain>/, records what it did in the catalog, and returns a small JSON-able summary.
Stages are idempotent: re-running one on unchanged input changes nothing of substance.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import select

from mmops import audit, faults
from mmops.catalog import (
    DatasetVersion,
    DriftReport,
    ModelVersion,
    TrainingRun,
    ValidationRun,
    locked_session,
    session_scope,
)
from mmops.config import Params, Settings, get_settings
from mmops.context import Context, artifacts, load_manifest, manifest_path
from mmops.domains import DomainPack
from mmops.errors import BadInputError, ConfigError, MmopsError, NotFoundError, ValidationFailedError
from mmops.provenance import git_commit
from mmops.registry import champion_model_tag

log = logging.getLogger(__name__)

Progress = Callable[..., None] | None


def _ctx(domain: str) -> tuple[Settings, Params, DomainPack]:
    ctx = Context.resolve(domain)
    return ctx.settings, ctx.params, ctx.pack


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj):
        obj = asdict(obj)  # type: ignore[arg-type]
    return json.loads(json.dumps(obj, default=str))


def _write_summary(path: Path, summary: Any) -> dict[str, Any]:
    from mmops.atomic import write_atomic

    data = _jsonable(summary)
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True))
    return data


_Stage = TypeVar("_Stage", bound=Callable[..., dict[str, Any]])


def _one_at_a_time(stage: _Stage) -> _Stage:
    """The stages that write a domain's dataset and model (build, train, evaluate, package) run one at a time
    per domain and project: a second run at once (a CLI call beside a DAG run) waits, saying so, instead of
    interleaving its writes into artifacts/<domain>/. The lock is a file in var/locks/, released by the OS if
    its holder is killed."""

    @functools.wraps(stage)
    def locked(domain: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        from mmops.locks import file_lock

        path = get_settings().var_dir / "locks" / f"model-{domain}.lock"
        with file_lock(path, f"another build, train, evaluate or package of {domain} in this project"):
            return stage(domain, *args, **kwargs)

    return cast(_Stage, locked)


def _bentoml_env(settings: Settings) -> None:
    """BentoML reads its home at import: point it inside the project before the first import."""
    os.environ.setdefault("BENTOML_HOME", str(settings.bentoml_home))
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")


def _model_version(session: Any, domain: str, checkpoint_sha256: str) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.domain == domain,
                                                     ModelVersion.checkpoint_sha256 == checkpoint_sha256))


# --- stages ---------------------------------------------------------------------------------------------


def pull_data(pack: str) -> dict[str, Any]:
    """Land a bundled real data pack into landing/<domain>/."""
    from mmops.datasets.packs import pull

    return _jsonable(pull(pack, get_settings().landing_dir))


def pull_domain(domain: str) -> dict[str, Any]:
    """Land the pack that params.yaml assigns to this domain."""
    settings, params, _ = _ctx(domain)
    if domain not in params.packs:
        raise NotFoundError(f"params.yaml does not list domain {domain!r} under packs (`mmops domain add {domain}`)")
    pack = params.packs[domain]
    if pack is not None:
        from mmops.datasets.packs import pack_for

        pack_for(domain, pack)  # it lands in landing/<its domain>/: that must be this one
        return pull_data(pack)
    # a domain of your own (its domain pack loaded above): its files are yours to land
    target = settings.landing_dir / domain
    target.mkdir(parents=True, exist_ok=True)
    files = sum(1 for p in target.rglob("*") if p.is_file())
    return {"pack": None, "domain": domain, "landing": str(target), "files": files,
            "note": f"no bundled pack: land the domain's files in {target}"}


def _session_factory(settings: Settings) -> Callable[[], Any]:
    from sqlalchemy.orm import sessionmaker

    from mmops.catalog import get_engine

    return sessionmaker(get_engine(settings.catalog_url), expire_on_commit=False)


def ingest(domain: str, progress: Progress = None, paths: list[str] | None = None) -> dict[str, Any]:
    """Ingest what is new in the domain's landing area (or exactly `paths`: one planned batch)."""
    from mmops.ingest import Landing, ingest_domain

    settings, params, pack = _ctx(domain)
    summary = ingest_domain(
        _session_factory(settings), pack, Landing(settings.landing(domain)), settings.data_dir,
        settings.quarantine_dir, phi_key=settings.phi_key(), paths=paths, workers=params.ingest.workers or None,
        executor=params.ingest.executor,
        batch_files=params.ingest.batch_files, progress=progress,
    )
    name = "ingest.json" if paths is None else f"ingest-batch-{_digest(paths)}.json"
    result = _jsonable(summary)
    if summary.ingested or summary.quarantined:
        with session_scope(settings.catalog_url) as session:
            audit.record(session, "ingested", domain, f"landing:{summary.ingested + summary.quarantined} files",
                         seen=summary.seen, ingested=summary.ingested, duplicates=summary.duplicates,
                         quarantined=summary.quarantined, new_records=summary.new_records)
    seconds = result.pop("seconds")  # wall times stay out of the file: it is a DVC output, kept deterministic
    return {**_write_summary(artifacts(domain, settings) / name, result), "seconds": seconds}


def _digest(items: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:12]


def plan_ingest(domain: str) -> dict[str, Any]:
    """The new or changed landed files, in batches of params `ingest.batch_files` (paths only)."""
    from mmops.ingest import Landing, plan_batches

    settings, params, pack = _ctx(domain)
    with session_scope(settings.catalog_url) as session:
        batches = plan_batches(session, pack, Landing(settings.landing(domain)), params.ingest.batch_files)
    return {"domain": domain, "batches": batches, "files": sum(len(b) for b in batches)}


def _landed_file(settings: Settings, domain: str, name: str) -> Path | None:
    """A control file (labels, annotations) of the landing area as a local path (fetched if remote)."""
    from mmops.ingest import Landing
    from mmops.modalities import MAX_FILE_BYTES

    landing = Landing(settings.landing(domain))
    if landing.local is not None:
        path = landing.local / name
        if not path.exists() and not path.is_symlink():
            return None
        # a symlink (or a folder on the way) pointing out of the landing area is refused, as ingest refuses it
        problem = landing.stat(name).problem
        if problem:
            raise BadInputError(f"{landing.url}/{name}: {problem}")
        return path
    try:
        data = landing.read(name, 16 * MAX_FILE_BYTES)
    except FileNotFoundError:
        return None
    local = settings.var_dir / "fetched" / domain / name
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(data)
    return local


def _landed_folder(settings: Settings, domain: str, folder: str, suffixes: tuple[str, ...]) -> list[str]:
    """Control files in a folder of the landing area (local or remote), as landing-relative names:
    `annotations/` (Label Studio exports), `ground_truth/` (labels that arrive after serving)."""
    from mmops.ingest import Landing

    landing = Landing(settings.landing(domain))
    if landing.local is not None:
        local = landing.local / folder
        found = [p.name for p in local.iterdir() if p.is_file()] if local.is_dir() else []
    else:
        found = [Path(p).name for p in landing.fs.glob(f"{landing.root}/{folder}/*")]
    return sorted(f"{folder}/{name}" for name in found if name.lower().endswith(suffixes))


def ground_truth_files(domain: str, settings: Settings | None = None) -> list[Path]:
    """The domain's ground-truth files (`sample_id,label` CSV or JSON, the ids the service logged), local."""
    settings = settings or get_settings()
    names = _landed_folder(settings, domain, "ground_truth", (".csv", ".json"))
    return [p for p in (_landed_file(settings, domain, n) for n in names) if p is not None]


def label(domain: str) -> dict[str, Any]:
    """Labels from every source that needs no model: the labels file (CSV or JSON), ground truth that came in
    after serving (landing/<domain>/ground_truth/), Label Studio exports dropped in landing/<domain>/annotations/,
    and the domain's labeling functions. Writes the resolution
    report (labels chosen per kind, conflicts, disagreements) to artifacts/<domain>/labels.json."""
    from mmops.labeling import import_labels
    from mmops.labeling.labelstudio import import_annotations
    from mmops.labeling.rules import apply_rules

    settings, params, pack = _ctx(domain)
    result: dict[str, Any] = {"domain": domain, "files": [], "ground_truth": [], "annotations": [], "rules": None}
    with locked_session(f"labels-{domain}", settings.catalog_url) as session:
        stem = Path(pack.labels_file).stem
        for name in dict.fromkeys([pack.labels_file, f"{stem}.csv", f"{stem}.json"]):
            path = _landed_file(settings, domain, name)
            if path is not None:
                result["files"].append(_jsonable(import_labels(session, pack, path)))
        for path in ground_truth_files(domain, settings):
            result["ground_truth"].append(_jsonable(import_labels(session, pack, path, ground_truth=True)))
        for name in _landed_folder(settings, domain, "annotations", (".json",)):
            path = _landed_file(settings, domain, name)
            if path is not None:
                result["annotations"].append(_jsonable(import_annotations(session, pack, path)))
        result["rules"] = _jsonable(apply_rules(session, pack, settings.data_dir))
        resolution = _label_report(session, domain, settings)
        audit.record(session, "labeled", domain, f"labels:{resolution['labeled']} records",
                     by_kind=resolution["by_kind"], conflicts=len(resolution["conflicts"]),
                     files=[f["source"] for f in result["files"]], ground_truth=len(result["ground_truth"]),
                     annotations=len(result["annotations"]))
    if not result["files"] and not result["annotations"] and not resolution["labeled"]:
        raise NotFoundError(f"no labels for {domain}: land {pack.labels_file} (or Label Studio exports in "
                            f"annotations/) next to the data, or add label_rules to the domain pack")
    trusted = sum(n for k, n in resolution["by_kind"].items() if k in params.label.train_on)
    result |= {"labeled": resolution["labeled"], "by_kind": resolution["by_kind"], "trusted": trusted,
               "conflicts": len(resolution["conflicts"]), "disagreements": len(resolution["disagreements"])}
    if resolution["conflicts"]:
        log.warning("%s: %d records have conflicting labels; see %s", domain, len(resolution["conflicts"]),
                    artifacts(domain, settings) / "label_conflicts.json")
    return _write_summary(artifacts(domain, settings) / "labels.json", result)


def _label_report(session: Any, domain: str, settings: Settings) -> dict[str, Any]:
    """Resolve every record's label and write the records whose sources disagree to label_conflicts.json."""
    from mmops.labeling import report, resolve

    session.flush()
    resolution = report(resolve(session, domain))
    _write_summary(artifacts(domain, settings) / "label_conflicts.json",
                   {k: resolution[k] for k in ("conflicts", "disagreements")})
    return resolution


def prelabel(domain: str, export: bool = True) -> dict[str, Any]:
    """Model-assisted labeling: the champion's predictions on records no human labeled (as `model` labels),
    the review queue re-ranked by uncertainty, and the top of it exported as Label Studio tasks to
    artifacts/<domain>/labelstudio/. Without a model yet, the queue is ranked by the rules' confidence."""
    from mmops.labeling.queue import prelabel as model_prelabel
    from mmops.labeling.queue import refresh_queue
    from mmops.registry import champion_or_latest

    settings, params, pack = _ctx(domain)
    result: dict[str, Any] = {"domain": domain, "model": None}
    with locked_session(f"labels-{domain}", settings.catalog_url) as session:
        try:
            mv = champion_or_latest(session, domain)
        except NotFoundError:
            mv, probs = None, None
        if mv is not None:
            summary, probs = model_prelabel(session, pack, settings.data_dir, mv, params.train.device)
            result["model"] = _jsonable(summary)
        session.flush()
        result["queue"] = refresh_queue(session, pack, probs, mv, params.label.uncertainty)
        resolution = _label_report(session, domain, settings)
        # records whose chosen label the model (or the rules) contradicts: likely label errors, worth a look
        result["disagreements"] = len(resolution["disagreements"])
    if export:
        result["export"] = export_tasks(domain)
    return _write_summary(artifacts(domain, settings) / "prelabel.json", result)


def export_tasks(domain: str) -> dict[str, Any]:
    """The most uncertain queued records as Label Studio tasks in artifacts/<domain>/labelstudio/."""
    from mmops.labeling.labelstudio import export_tasks as _export

    settings, params, pack = _ctx(domain)
    with session_scope(settings.catalog_url) as session:
        return _export(session, pack, settings.data_dir, artifacts(domain, settings) / "labelstudio",
                       params.label.export_limit)


def import_annotations(domain: str, path: str) -> dict[str, Any]:
    """Import one Label Studio JSON export as human labels."""
    from mmops.labeling.labelstudio import import_annotations as _import

    settings, _, pack = _ctx(domain)
    export = Path(path)
    if not export.is_file():
        raise NotFoundError(f"no Label Studio export at {export}")
    with locked_session(f"labels-{domain}", settings.catalog_url) as session:
        summary = _jsonable(_import(session, pack, export))
        audit.record(session, "annotations_imported", domain, f"file:{export.name}",
                     imported=summary["imported"], updated=summary["updated"], rejected=len(summary["rejected"]))
        return summary


def validate(domain: str, profile: bool = False) -> dict[str, Any]:
    """Run the gate on the domain's labeled records; raises ValidationFailedError (after recording it).

    The suites come from `expectations/<domain>.yaml` when the project has one (reviewed, committed), else
    from the domain pack's schema. With `profile`, the gate does not run: the suites file is (re)generated
    from the current dataset version, for a person to review and commit.
    """
    from mmops.records import fingerprint, load_records
    from mmops.validation import load_suites, run_gate, suite_path

    settings, params, pack = _ctx(domain)
    if profile:
        return profile_suites(domain)
    report = artifacts(domain, settings) / "validation.json"
    path = suite_path(settings.root, domain)
    suites = load_suites(path) if path.exists() else None
    with session_scope(settings.catalog_url) as session:
        records = load_records(session, domain, params.label.train_on)
        fp = fingerprint([r for r in records if r.label is not None])
        result = run_gate(pack, records, fp, report, artifacts(domain, settings) / "data_docs", suites)
        session.add(ValidationRun(domain=domain, fingerprint=fp, success=result.success,
                                  n_expectations=result.n_expectations, failed=result.failed,
                                  report_path=str(report)))
    if not result.success:
        raise ValidationFailedError(
            f"{domain}: validation gate failed ({len(result.failed)} critical): " + "; ".join(result.failed[:5])
            + f" - details in {report}" + (f", Data Docs {result.data_docs}" if result.data_docs else ""),
            result.failed)
    return result.to_json()


def profile_suites(domain: str) -> dict[str, Any]:
    """Write expectations/<domain>.yaml from the current dataset version (the reference)."""
    from mmops.records import FileRef, Record
    from mmops.validation import profile_suites as _profile
    from mmops.validation import suite_path, write_suites

    settings, _, pack = _ctx(domain)
    manifest = load_manifest(domain, settings)
    reference = [Record(r["key"], r["label"], {m: FileRef(f["blob"], f["sha256"], f["stats"])
                                               for m, f in r["files"].items()}) for r in manifest.records]
    path = suite_path(settings.root, domain)
    n = write_suites(path, domain, _profile(pack, reference), (
        f"Validation suites of the {domain} domain, used by `mmops validate` (critical fails the gate, warning\n"
        f"is reported). Generated by `mmops validate --profile --domain {domain}` from dataset version\n"
        f"{manifest.id} ({len(reference)} records): the domain pack's schema plus the ranges seen there.\n"
        "Review, edit, commit; regenerate from a newer reference when the data legitimately changes."))
    return {"domain": domain, "suites_file": str(path), "expectations": n, "reference": manifest.id}


@_one_at_a_time
def build(domain: str) -> dict[str, Any]:
    """Build (or find) the dataset version of the domain's labeled records. Needs a passed gate on them."""
    from mmops.datasets.build import build_manifest
    from mmops.records import fingerprint, load_records

    settings, params, pack = _ctx(domain)
    with locked_session(f"dataset-{domain}", settings.catalog_url) as session:
        records = [r for r in load_records(session, domain, params.label.train_on) if r.label is not None]
        fp = fingerprint(records)
        gate = session.scalar(select(ValidationRun).where(ValidationRun.domain == domain,
                                                          ValidationRun.fingerprint == fp)
                              .order_by(ValidationRun.id.desc()))
        if gate is None or not gate.success:
            state = "failed" if gate else "has not run"
            raise ValidationFailedError(f"{domain}: the validation gate {state} on the current labeled data; "
                                        f"run `mmops validate --domain {domain}` first")
        manifest = build_manifest(domain, list(pack.classes), pack.modality_names, records,
                                  params.build.test_size, params.build.val_size, params.seed)
        path = manifest_path(domain, settings)
        manifest.write(path)
        if session.get(DatasetVersion, manifest.id) is None:
            session.add(DatasetVersion(id=manifest.id, domain=domain, manifest_path=str(path),
                                       n_samples=len(manifest.records), split_counts=manifest.split_counts,
                                       validation_run_id=gate.id))
            audit.record(session, "dataset_built", domain, f"dataset:{manifest.id}", n_samples=len(manifest.records),
                         split_counts=manifest.split_counts, validation_run=gate.id)
            session.flush()
            faults.point("build.before_commit")
    return {"dataset_version": manifest.id, "n_samples": len(manifest.records),
            "split_counts": manifest.split_counts, "manifest": str(path)}


@dataclass(frozen=True)
class Nodes:
    """Where a distributed training runs: `nnodes` machines of `nproc` workers each, meeting at `master`
    (host:port of node 0, which records the run and writes the model). One machine: Nodes(nproc=N)."""

    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master: str | None = None

    def __post_init__(self) -> None:
        if self.nproc < 1 or self.nnodes < 1 or not 0 <= self.node_rank < self.nnodes:
            raise ConfigError(f"--node-rank {self.node_rank} of --nnodes {self.nnodes} (and --nproc >= 1) is not a "
                              "place in the cluster")
        if self.nnodes > 1:
            host, _, port = (self.master or "").rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError("several nodes need --master host:port (node 0's address, the same on every node)")

    @property
    def distributed(self) -> bool:
        return self.nproc * self.nnodes > 1

    def torchrun_args(self) -> list[str]:
        if self.nnodes == 1:
            return ["--standalone", f"--nproc-per-node={self.nproc}"]
        host, _, port = (self.master or "").rpartition(":")
        # static rendezvous: node r's workers are global ranks r*nproc .. r*nproc+nproc-1, so rank 0 (the one
        # that writes) is on node 0, where the run is recorded
        return [f"--nnodes={self.nnodes}", f"--node-rank={self.node_rank}", f"--nproc-per-node={self.nproc}",
                f"--master-addr={host}", f"--master-port={port}"]


@_one_at_a_time
def train(domain: str, progress: Progress = None, resume: bool | str = False,
          nodes: Nodes | None = None) -> dict[str, Any]:
    """Train on the current dataset version.

    resume: continue from the last epoch checkpoint of the same run ("auto": if there is one of this dataset
    and these params, else start over, as a task's retry does). nodes: distributed data parallel over
    `nodes.nproc` torchrun workers (gloo on CPU, NCCL on GPUs), on several machines with this one as node 0
    (the others run `join_training`); default one process."""
    from mmops.training import TrainResult, train_model

    nodes = nodes or Nodes()
    if nodes.node_rank != 0:
        raise ConfigError("only node 0 records a training run; the other nodes join it (join_training)")
    settings, params, pack = _ctx(domain)
    manifest = load_manifest(domain, settings)
    with session_scope(settings.catalog_url) as session:
        dv = session.get(DatasetVersion, manifest.id)
        if dv is None or dv.validation_run_id is None:
            raise ValidationFailedError(f"dataset {manifest.id} is not in the catalog with a passed gate; "
                                        f"run `mmops build --domain {domain}`")
        run = TrainingRun(domain=domain, dataset_version_id=manifest.id, params=params.train.model_dump(),
                          params_hash="", git_commit=git_commit(settings.root), device="?", status="running")
        session.add(run)
    out = artifacts(domain, settings) / "model"
    try:
        if nodes.distributed:
            result = TrainResult(**_train_distributed(domain, nodes, resume, settings))
        else:
            result = train_model(pack, manifest, settings.data_dir, params.train, params.seed, out, progress,
                                 resume=resume)
    except BaseException as exc:
        with session_scope(settings.catalog_url) as session:
            session.get(TrainingRun, run.id).status = "failed"  # type: ignore[union-attr]
            audit.record(session, "training_failed", domain, f"training_run:{run.id}", dataset_version=manifest.id,
                         error=f"{type(exc).__name__}: {exc}"[:500])
        raise
    with session_scope(settings.catalog_url) as session:
        row = session.get(TrainingRun, run.id)
        assert row is not None
        row.status, row.device, row.metrics = "finished", result.device, result.val_metrics
        row.params_hash, row.checkpoint_sha256 = result.params_hash, result.checkpoint_sha256
        row.checkpoint_path, row.finished_at = str(result.model_dir), datetime.now(UTC)
        audit.record(session, "trained", domain, f"training_run:{run.id}", dataset_version=manifest.id,
                     checkpoint_sha256=result.checkpoint_sha256, device=result.device, params_hash=result.params_hash,
                     git_commit=row.git_commit, workers=nodes.nproc * nodes.nnodes, nodes=nodes.nnodes)
    return {"training_run": run.id, **_jsonable(result)}


def _train_distributed(domain: str, nodes: Nodes, resume: bool | str, settings: Settings) -> dict[str, Any]:
    """Run the trainer under torchrun; rank 0 hands its TrainResult back through a JSON file."""
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mmops-ddp-") as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", *nodes.torchrun_args(),
               "-m", "mmops.training", "--domain", domain, "--result", str(result)] + (
                   ["--resume", "auto"] if resume == "auto" else ["--resume"] if resume else [])
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        proc = subprocess.run(cmd, cwd=settings.root, env=env)
        if nodes.node_rank != 0:
            if proc.returncode != 0:
                raise MmopsError(f"this node's training workers failed (torchrun exit {proc.returncode}); see the "
                                 "log above and node 0's")
            return {}
        if proc.returncode != 0 or not result.exists():
            raise MmopsError(f"distributed training failed (torchrun exit {proc.returncode}); see the log above")
        raw: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    raw["model_dir"] = Path(raw["model_dir"])
    return raw


def join_training(domain: str, nodes: Nodes, resume: bool = False) -> dict[str, Any]:
    """Node 1.. of a multi-node training: run this machine's workers until node 0's run ends. They read this
    machine's copy of the dataset (`dvc pull`, or a shared filesystem) and write nothing: node 0 records the
    run and writes the model. Every rank checks that all hold the same dataset version and parameters."""
    if nodes.node_rank == 0 or nodes.nnodes < 2:
        raise ConfigError("join_training is for nodes 1.. of a multi-node run; node 0 runs `mmops train`")
    settings, _, _ = _ctx(domain)
    load_manifest(domain, settings)  # no dataset here: say so before the others wait for this node
    _train_distributed(domain, nodes, resume, settings)
    return {"domain": domain, "node_rank": nodes.node_rank, "nnodes": nodes.nnodes, "workers": nodes.nproc}


@_one_at_a_time
def evaluate(domain: str) -> dict[str, Any]:
    """Test-split metrics (overall, per class, per single modality), confusion matrix, registry update."""
    import numpy as np

    from mmops.datasets.tensors import load_split
    from mmops.evaluation import classification_metrics, plot_confusion, plot_roc, write_metrics
    from mmops.inference import Predictor
    from mmops.monitoring import SKETCH, build_reference_sketch
    from mmops.registry import get_alias, register, store_model, store_path

    settings, params, pack = _ctx(domain)
    manifest = load_manifest(domain, settings)
    out = artifacts(domain, settings)
    predictor = Predictor.load(out / "model")
    if predictor.card["dataset_version"] != manifest.id:
        raise ValidationFailedError(f"the model in {out / 'model'} was trained on {predictor.card['dataset_version']}"
                                    f", not on the current dataset {manifest.id}; run `mmops train`")
    rows = manifest.split("test")
    values = load_split(pack, settings.data_dir, rows)
    y = np.array([pack.classes.index(r["label"]) for r in rows])
    probs = predictor.predict_proba(values)
    metrics = classification_metrics(y, probs, list(pack.classes))
    if len(pack.modalities) > 1:
        metrics["single_modality"] = {}
        for m in pack.modality_names:
            idx = [i for i, v in enumerate(values) if m in v]
            if idx:
                only = [{m: values[i][m]} for i in idx]
                sm = classification_metrics(y[idx], predictor.predict_proba(only), list(pack.classes))
                metrics["single_modality"][m] = {k: sm[k] for k in ("n", "accuracy", "macro_f1", "auroc")}
    metrics["dataset_version"] = manifest.id
    write_metrics(metrics, out / "metrics.json")
    plot_confusion(metrics["confusion_matrix"], list(pack.classes),
                   f"{domain}: test accuracy {metrics['accuracy']:.3f}", out / "confusion_matrix.png")
    plot_roc(y, probs, list(pack.classes), f"{domain}: test ROC" + (
        f" (AUROC {metrics['auroc']:.3f})" if metrics["auroc"] is not None else ""), out / "roc.png")
    sha = predictor.card["checkpoint_sha256"]
    # what the model learnt from, summarised for drift checks (packaged with the model)
    build_reference_sketch(pack, manifest, settings.data_dir, out / "model", out / SKETCH)
    shutil.copy2(out / SKETCH, store_model(out / "model", settings.var_dir, domain, sha) / SKETCH)
    keep = ("accuracy", "macro_f1", "auroc", "ece", "n")
    # version numbers and aliases: one registration at a time per domain, across processes and machines
    with locked_session(f"registry-{domain}", settings.catalog_url) as session:
        run = session.scalar(select(TrainingRun).where(
            TrainingRun.domain == domain, TrainingRun.checkpoint_sha256 == sha).order_by(TrainingRun.id.desc()))
        if run is None:
            raise NotFoundError(f"no training run in the catalog produced {out / 'model'}")
        champion = get_alias(session, domain, "champion")
        champion_metrics = None
        if champion is not None and champion.checkpoint_sha256 != sha:
            champion_metrics = _rescore(store_path(settings.var_dir, domain, champion.checkpoint_sha256),
                                        pack, values, y)
        reg = register(session, run, {k: metrics[k] for k in keep}, margin=params.promote.margin,
                       metric=params.promote.metric, champion_metrics=champion_metrics, holdout=manifest.id)
        audit.record(session, "registered", domain, f"model:v{reg.version}", training_run=run.id,
                     checkpoint_sha256=sha, promoted=reg.promoted, reason=reg.reason,
                     metrics={k: metrics[k] for k in keep})
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "auroc": metrics["auroc"],
            "ece": metrics["ece"], "model_version": reg.version,
            "promoted": reg.promoted, "reason": reg.reason, "metrics": str(out / "metrics.json"),
            "confusion_matrix": str(out / "confusion_matrix.png"), "roc": str(out / "roc.png")}


def registry(domain: str) -> dict[str, Any]:
    """Model versions with lineage and aliases, and the promotion audit log."""
    from mmops.registry import describe

    settings, _, _ = _ctx(domain)
    with session_scope(settings.catalog_url) as session:
        return describe(session, domain)


def promote(domain: str, version: int, reason: str, actor: str | None = None) -> dict[str, Any]:
    """Make a registered version champion by hand (rollback or override); written to the audit log."""
    from mmops.registry import promote as do_promote

    settings, _, _ = _ctx(domain)
    with locked_session(f"registry-{domain}", settings.catalog_url) as session:
        actor = actor or audit.current_actor()
        mv = do_promote(session, domain, version, actor, reason)
        audit.record(session, "promoted", domain, f"model:v{mv.version}", actor=actor, reason=reason,
                     checkpoint_sha256=mv.checkpoint_sha256)
        return {"domain": domain, "champion": mv.version, "checkpoint_sha256": mv.checkpoint_sha256}


def _rescore(model_dir: Path, pack: DomainPack, values: list[dict[str, Any]], y: Any) -> dict[str, Any] | None:
    """A stored model's metrics on this holdout, or None when it cannot be scored here."""
    from mmops.errors import MmopsError
    from mmops.evaluation import classification_metrics
    from mmops.inference import Predictor

    try:
        old = Predictor.load(model_dir)
    except (MmopsError, OSError, KeyError, RuntimeError) as exc:
        log.warning("champion at %s cannot be re-scored: %s", model_dir, exc)
        return None
    if old.classes != list(pack.classes) or set(old.pack.modality_names) != set(pack.modality_names):
        return None
    return classification_metrics(y, old.predict_proba(values), list(pack.classes))


@_one_at_a_time
def package(domain: str, build_bento: bool = True) -> dict[str, Any]:
    """Save the evaluated model to the BentoML model store and build the domain's bento."""
    settings, _, _ = _ctx(domain)
    _bentoml_env(settings)
    from mmops.inference import read_card
    from mmops.serving.packaging import build_bento as _build
    from mmops.serving.packaging import save_to_model_store

    model_dir = artifacts(domain, settings) / "model"
    card = read_card(model_dir)
    with session_scope(settings.catalog_url) as session:
        mv = _model_version(session, domain, card["checkpoint_sha256"])
        if mv is None:
            raise NotFoundError(f"the model in {model_dir} is not registered; run `mmops evaluate` first")
        mv_id, version, metrics = mv.id, mv.version, mv.metrics
    # The bento build takes seconds: keep it outside any catalog transaction.
    tag = save_to_model_store(domain, model_dir, {"model_version": version, "metrics": metrics})
    bento = _build(domain, tag, settings.root / "bentofile.yaml", settings.root) if build_bento else None
    with session_scope(settings.catalog_url) as session:
        row = session.get(ModelVersion, mv_id)
        assert row is not None
        row.bento_model_tag, row.bento_tag = tag, bento or row.bento_tag
        audit.record(session, "packaged", domain, f"model:v{version}", model_tag=tag, bento_tag=bento)
    return _write_summary(artifacts(domain, settings) / "package.json",
                          {"model_tag": tag, "bento_tag": bento, "model_version": version})


def reload_service(domain: str, url: str, tag: str | None = None) -> dict[str, Any]:
    """Swap the champion (or `tag`) into a running service without a restart (POST /admin/reload)."""
    import httpx

    from mmops.serving.client import auth_headers

    settings = get_settings()
    tag = tag or champion_model_tag(settings.catalog_url, domain)
    if not tag:
        raise NotFoundError(f"{domain} has no packaged champion; run `mmops package --domain {domain}` or pass --tag")
    try:
        resp = httpx.post(f"{url.rstrip('/')}/admin/reload", json={"tag": tag}, headers=auth_headers(), timeout=300)
    except httpx.HTTPError as exc:
        record_deploy(settings, domain, tag, url, how="reload", error=f"cannot reach the service: {exc}")
        raise MmopsError(f"cannot reach the service at {url}: {exc}") from exc
    if resp.status_code != 200:
        record_deploy(settings, domain, tag, url, how="reload", error=f"refused ({resp.status_code}): {resp.text[:300]}")
        raise MmopsError(f"the service refused the reload ({resp.status_code}): {resp.text[:300]}")
    meta: dict[str, Any] = resp.json()
    record_deploy(settings, domain, tag, url, how="reload", model_version=meta.get("model_version"))
    return meta


def record_deploy(settings: Settings, domain: str, tag: str, url: str, error: str | None = None,
                  **detail: Any) -> None:
    """A deployment (a reload, or a service started by `mmops serve`) or a failed one, in the audit log."""
    with session_scope(settings.catalog_url) as session:
        audit.record(session, "deploy_failed" if error else "deployed", domain, f"bento_model:{tag}", url=url,
                     **({"error": error} if error else {}), **detail)


def audit_log(domain: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest `limit` audit events (of one domain), oldest first."""
    settings = get_settings()
    with session_scope(settings.catalog_url) as session:
        return audit.events(session, domain, limit)


def _counted(chunks: Iterator[tuple[Any, Any, int]], progress: Callable[..., None]) -> Iterator[tuple[Any, Any, int]]:
    """The chunks as they are, telling `progress` how many records went by (and when they are all in)."""
    rows = 0
    for chunk in chunks:
        rows += len(chunk[0])
        progress(rows, False)
        yield chunk
    progress(rows, True)


def monitor(domain: str, current: str = "log", since: float | None = None, progress: Progress = None,
            ) -> dict[str, Any]:
    """Drift of what the served model sees against what it learnt from: the model's reference sketch (its
    training and validation splits) vs the service's prediction log (`log`) or the held-out test split run
    through the model (`test`, a no-drift baseline). The log is streamed, from `since` (epoch seconds;
    default: the last `monitor.window_hours`); the verdict goes to the catalog. progress(rows, done) after
    each streamed chunk, and once more (done=True) before the report is written."""
    from mmops.drift import ReferenceSketch
    from mmops.inference import read_card
    from mmops.monitoring import (
        SKETCH,
        build_reference_sketch,
        check_drift,
        iter_prediction_log,
        last_logged_model,
        observe_split,
        prediction_logs,
        read_ground_truth,
        served_performance,
    )

    settings, params, pack = _ctx(domain)
    manifest = load_manifest(domain, settings)
    logs = prediction_logs(settings.prediction_log_dir, domain)  # one file, or one per replica
    if current == "test":  # the pipeline's model
        model_dir, sketch_path = artifacts(domain, settings) / "model", artifacts(domain, settings) / SKETCH
    elif current == "log":  # the model that answered the log's latest line: the one the service runs now
        sha = last_logged_model(logs)
        if sha is None:
            raise NotFoundError(f"no logged predictions in {settings.prediction_log_dir / domain}.jsonl (or "
                                f"{domain}@<replica>.jsonl); send the service traffic, or use --current test")
        model_dir, sketch_path = _model_dir(domain, sha, settings)
    else:
        raise NotFoundError(f"unknown current data {current!r} (log or test)")
    card = read_card(model_dir)
    sketch = ReferenceSketch.load(sketch_path) if sketch_path.exists() else None
    if sketch is None or sketch.meta.get("checkpoint_sha256") != card["checkpoint_sha256"]:
        log.warning("%s is missing or of another model; building it from the current dataset version", sketch_path)
        sketch = build_reference_sketch(pack, manifest, settings.data_dir, model_dir, sketch_path)
    if current == "test":
        frame, embeddings = observe_split(pack, manifest, settings.data_dir, model_dir, "test")
        chunks = iter([(frame, embeddings, 0)])
    else:
        dims = {g: len(e.mean) for g, e in sketch.embeddings.items()}
        if since is None and params.monitor.window_hours > 0:
            since = time.time() - params.monitor.window_hours * 3600
        chunks = iter_prediction_log(logs, card["checkpoint_sha256"], dims, since)
    window = "" if since is None or current != "log" else f" since {datetime.fromtimestamp(since, UTC):%Y-%m-%d %H:%M} UTC"
    if progress is not None:
        chunks = _counted(chunks, progress)
    result = check_drift(sketch, chunks, params.monitor.drift_share_threshold,
                         artifacts(domain, settings) / "drift", f"mmops {domain}: {current}{window} vs reference")
    verdict = result.verdict
    if verdict.n_current == 0:
        raise NotFoundError(f"nothing to compare: no {current} records for {domain}{window}")
    performance: dict[str, Any] = {"n_labeled": 0, "accuracy": None, "macro_f1": None}
    truth, truth_problems = read_ground_truth(ground_truth_files(domain, settings))
    if current == "log":
        performance = served_performance(logs, card["checkpoint_sha256"], since, truth)
    with session_scope(settings.catalog_url) as session:
        mv = _model_version(session, domain, card["checkpoint_sha256"])
        tested = (mv.metrics or {}).get("accuracy") if mv else None
        performance["test_accuracy"] = tested
        performance["degraded"] = bool(
            performance["accuracy"] is not None and tested is not None
            and performance["n_labeled"] >= params.monitor.min_labeled
            and performance["accuracy"] < tested - params.monitor.accuracy_drop)
        performance["unreadable_files"] = truth_problems
        report = _add_performance(result.json_path, performance)
        session.add(DriftReport(domain=domain, model_version_id=mv.id if mv else None,
                                reference_dataset_version_id=manifest.id, current_source=current,
                                n_reference=result.n_reference, n_current=verdict.n_current,
                                drift_share=verdict.drift_share, drifted=verdict.drifted,
                                drifted_columns=verdict.drifted_columns + [
                                    f"embedding:{g}" for g in verdict.drifted_embeddings],
                                html_path=str(result.html_path), json_path=str(result.json_path)))
    dashboard = _add_to_dashboard(domain, pack, report, result.snapshots, settings)
    return {"drift_share": verdict.drift_share, "drifted": verdict.drifted, "drifted_groups": verdict.drifted_groups,
            "drifted_columns": verdict.drifted_columns, "drifted_embeddings": verdict.drifted_embeddings,
            "prediction_drifted": bool(verdict.columns.get("prediction") and verdict.columns["prediction"].drifted),
            "n_reference": result.n_reference, "n_current": verdict.n_current,
            "skipped_lines": result.skipped_lines, "performance": performance, "dashboard": dashboard,
            "html": str(result.html_path), "json": str(result.json_path),
            "embedding_html": {g: r["html"] for g, r in report.get("evidently_embeddings", {}).items() if "html" in r}}


def _add_performance(json_path: Path, performance: dict[str, Any]) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(json_path.read_text(encoding="utf-8"))
    report["performance"] = performance
    json_path.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return report


def _add_to_dashboard(domain: str, pack: DomainPack, report: dict[str, Any], samples: dict[str, Any],
                      settings: Settings) -> dict[str, Any]:
    """The check's snapshots into the domain's dashboard project. The verdict is already recorded (JSON,
    catalog): a dashboard that cannot be written is reported, loudly, without failing the check."""
    from mmops.dashboards import add_check

    try:
        return add_check(domain, pack, report, samples, settings=settings)
    except Exception as exc:  # noqa: BLE001 - Evidently's workspace errors have no common base class
        log.error("%s: the check could not be added to the dashboard workspace: %s", domain, exc)
        return {"error": str(exc)}


def _model_dir(domain: str, sha: str, settings: Settings) -> tuple[Path, Path]:
    """(model directory, reference sketch path) of a checkpoint: the pipeline's model, or the registry's copy."""
    from mmops.inference import read_card
    from mmops.monitoring import SKETCH
    from mmops.registry import store_path

    here = artifacts(domain, settings)
    if (here / "model" / "model_card.json").exists() and read_card(here / "model")["checkpoint_sha256"] == sha:
        return here / "model", here / SKETCH
    stored = store_path(settings.var_dir, domain, sha)
    if (stored / "model_card.json").exists():
        return stored, stored / SKETCH
    raise NotFoundError(f"the {domain} service's log comes from checkpoint {sha[:12]}, which is not in this "
                        "project's registry: monitor from the project that trained it")


STAGES: dict[str, Callable[..., dict[str, Any]]] = {
    "ingest": ingest, "plan_ingest": plan_ingest, "label": label, "prelabel": prelabel, "export_tasks": export_tasks,
    "validate": validate, "build": build, "train": train,
    "evaluate": evaluate, "package": package, "monitor": monitor,
}
