"""A challenger tried on live traffic before it is champion: in shadow beside the champion (mirrored records,
never answering; mmops/serving/shadow.py), started and stopped on a running service and audited, and the
report of what its shadow log says (agreement, latency, both accuracies on ground truth that came in)."""

from __future__ import annotations

from typing import Any

from mmops import audit
from mmops.catalog import ModelVersion, session_scope
from mmops.errors import MmopsError, NotFoundError
from mmops.registry import get_alias
from mmops.stages.common import resolve


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


def _version(session: Any, domain: str, version: int | None) -> ModelVersion:
    from sqlalchemy import select

    mv = (get_alias(session, domain, "challenger") if version is None else session.scalar(
        select(ModelVersion).where(ModelVersion.domain == domain, ModelVersion.version == version)))
    if mv is None:
        raise NotFoundError(f"{domain} has no " + (f"model version {version}" if version else "challenger") +
                            f"; see `mmops registry --domain {domain}`")
    if not mv.bento_model_tag:
        raise NotFoundError(f"v{mv.version} of {domain} was never packaged: `mmops package --domain {domain}` "
                            "after evaluating it")
    return mv


def shadow_start(domain: str, url: str, version: int | None = None, actor: str | None = None) -> dict[str, Any]:
    """Run a registered version (default: the challenger) in shadow in the service at `url`."""
    settings, _, _ = resolve(domain)
    with session_scope(settings.catalog_url) as session:
        mv = _version(session, domain, version)
        number, tag = mv.version, mv.bento_model_tag
        champion = get_alias(session, domain, "champion")
        if champion is not None and champion.id == mv.id:
            raise MmopsError(f"v{number} is {domain}'s champion: a shadow runs a challenger beside it")
    answer = admin_call(url, "/admin/shadow", {"tag": tag}, "the shadow")
    with session_scope(settings.catalog_url) as session:
        audit.record(session, "shadow_started", domain, f"model:v{number}", actor=actor, url=url, model_tag=tag)
    return {"domain": domain, "version": number, "model_tag": tag, **answer}


def shadow_stop(domain: str, url: str, actor: str | None = None) -> dict[str, Any]:
    """Stop the shadow of the service at `url`; its final counts are audited."""
    settings, _, _ = resolve(domain)
    answer = admin_call(url, "/admin/shadow", {"tag": ""}, "stopping the shadow")
    stopped = answer.get("stopped") or {}
    with session_scope(settings.catalog_url) as session:
        audit.record(session, "shadow_stopped", domain, f"bento_model:{stopped.get('shadow')}", actor=actor,
                     url=url, **{k: stopped[k] for k in ("mirrored", "failed", "dropped") if k in stopped})
    return {"domain": domain, **answer}


def shadow_report(domain: str, since: float | None = None, tag: str | None = None) -> dict[str, Any]:
    """What the domain's shadow logs say about a challenger (default: the latest shadowed)."""
    from mmops.monitoring import read_ground_truth
    from mmops.serving.shadow import report
    from mmops.stages.data import ground_truth_files

    settings, _, _ = resolve(domain)
    truth, problems = read_ground_truth(ground_truth_files(domain, settings))
    return {**report(settings.prediction_log_dir, domain, truth, since, tag), "ground_truth_problems": problems}
