"""Delivery: the model into BentoML's store and a bento, a running service reloaded, and every deployment
in the audit log."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from mmops import audit
from mmops.card import read_card
from mmops.catalog import ModelVersion, session_scope
from mmops.config import Settings, get_settings
from mmops.context import artifacts
from mmops.errors import MmopsError, NotFoundError
from mmops.registry import champion_model_tag
from mmops.serving import bentoml_env
from mmops.stages.common import model_version, one_at_a_time, resolve, write_summary
from mmops.stages.results import Packaged
from mmops.tasks import task_of


@one_at_a_time
def package(domain: str, build_bento: bool = True, runtime: str | None = None) -> Packaged:
    """Save the evaluated model with its complete model card to the BentoML model store and build the domain's
    bento; a card with a missing field is refused (ValidationFailedError naming it). runtime (default:
    params.yaml serve.runtime, else torch): onnx or int8 ship the model exported for ONNX Runtime, once it
    passed the parity gate on the test split (mmops/runtimes/parity.py)."""
    settings, params, _ = resolve(domain)
    runtime = runtime or params.serve.runtime.get(domain, "torch")
    bentoml_env(settings)
    from mmops.card.complete import CARD_DIR, Approval, read_complete
    from mmops.registry import approval
    from mmops.serving.packaging import build_bento as _build
    from mmops.serving.packaging import save_to_model_store

    model_dir = artifacts(domain, settings) / "model"
    card = read_card(model_dir)
    complete = read_complete(artifacts(domain, settings) / CARD_DIR)
    with session_scope(settings.catalog_url) as session:
        mv = model_version(session, domain, card.checkpoint_sha256)
        if mv is None:
            raise NotFoundError(f"the model in {model_dir} is not registered; run `mmops evaluate` first")
        mv_id, version, metrics = mv.id, mv.version, mv.metrics
        approved = approval(session, domain, mv.id)  # as the registry says now (a promotion by hand since)
    complete = complete.model_copy(update={"approval": Approval(**approved) if approved else None,
                                           "model_version": version})
    complete.require_complete(task_of(card.pack.task).calibration_keys, "mmops package")
    with tempfile.TemporaryDirectory(prefix="mmops-runtime-") as tmp:
        compiled = None if runtime == "torch" else _compiled(domain, runtime, model_dir, Path(tmp), settings)
        complete = complete.model_copy(update={"runtime": compiled})
        # The bento build takes seconds: keep it outside any catalog transaction.
        tag = save_to_model_store(domain, model_dir, {"model_version": version, "metrics": metrics}, complete,
                                  Path(tmp) if compiled else None)
    bento = _build(domain, tag, settings.root / "bentofile.yaml", settings.root) if build_bento else None
    with session_scope(settings.catalog_url) as session:
        row = session.get(ModelVersion, mv_id)
        assert row is not None
        row.bento_model_tag, row.bento_tag = tag, bento or row.bento_tag
        audit.record(session, "packaged", domain, f"model:v{version}", model_tag=tag, bento_tag=bento)
    return Packaged(**write_summary(artifacts(domain, settings) / "package.json",
                                    {"model_tag": tag, "bento_tag": bento, "model_version": version}))


def _compiled(domain: str, runtime: str, model_dir: Path, out_dir: Path, settings: Settings) -> Any:
    """The model exported for `runtime` into out_dir, checked on the test split of the dataset it trained on."""
    from mmops.context import load_manifest
    from mmops.datasets.tensors import load_split
    from mmops.errors import ConfigError
    from mmops.runtimes.parity import compile_model

    task = task_of(read_card(model_dir).pack.task)
    if task.name != "classification":
        raise ConfigError(f"runtime {runtime!r}: {domain} is a {task.name} model, which serves on eager torch only")
    predictor = task.load(model_dir, device="cpu")
    manifest = load_manifest(domain, settings, predictor.card.dataset_version)
    rows = manifest.split("test")
    values = load_split(predictor.pack, settings.data_dir, rows)
    return compile_model(runtime, predictor, model_dir, values, task.targets(predictor.pack, rows), out_dir)


def reload_service(domain: str, url: str, tag: str | None = None) -> dict[str, Any]:
    """Swap the champion (or `tag`) into a running service without a restart (POST /admin/reload)."""
    settings = get_settings()
    tag = tag or champion_model_tag(settings.catalog_url, domain)
    if not tag:
        raise NotFoundError(f"{domain} has no packaged champion; run `mmops package --domain {domain}` or pass --tag")
    try:
        meta = admin_call(url, "/admin/reload", {"tag": tag}, "the reload")
    except MmopsError as exc:
        record_deploy(settings, domain, tag, url, how="reload", error=str(exc))
        raise
    record_deploy(settings, domain, tag, url, how="reload", model_version=meta.get("model_version"))
    return meta


def admin_call(url: str, route: str, body: dict[str, Any], what: str) -> dict[str, Any]:
    """POST to a running service's admin route (with the bearer token when one is set); MmopsError saying
    what failed."""
    import httpx

    from mmops.serving.client import auth_headers

    try:
        resp = httpx.post(f"{url.rstrip('/')}{route}", json=body, headers=auth_headers(), timeout=300)
    except httpx.HTTPError as exc:
        raise MmopsError(f"cannot reach the service at {url}: {exc}") from exc
    if resp.status_code != 200:
        raise MmopsError(f"the service refused {what} ({resp.status_code}): {resp.text[:300]}")
    answer: dict[str, Any] = resp.json()
    return answer


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


def audit_verify() -> dict[str, Any]:
    """The ledger's chain recomputed (audit.verify)."""
    with session_scope(get_settings().catalog_url) as session:
        return audit.verify(session)
