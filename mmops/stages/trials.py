"""A challenger tried on live traffic before it is champion, on a running service, each step audited: in
shadow beside the champion (mirrored records, never answering; mmops/serving/shadow.py) with the report of
what its shadow log says (agreement, latency, both accuracies on ground truth that came in), then as a canary
answering a sticky share of the records (mmops/serving/canary.py), promoted when it held its bounds for
`release.canary_records` records, rolled back (ended, and the challenger rejected) when the service ended it."""

from __future__ import annotations

from typing import Any

from mmops import audit
from mmops.catalog import ModelVersion, locked_session, session_scope
from mmops.errors import MmopsError, NotFoundError
from mmops.registry import get_alias
from mmops.stages.common import resolve
from mmops.stages.deploy import admin_call, reload_service


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
    settings, params, _ = resolve(domain)
    with session_scope(settings.catalog_url) as session:
        mv = _version(session, domain, version)
        number, tag = mv.version, mv.bento_model_tag
        champion = get_alias(session, domain, "champion")
        if champion is not None and champion.id == mv.id:
            raise MmopsError(f"v{number} is {domain}'s champion: a shadow runs a challenger beside it")
    answer = admin_call(url, "/admin/shadow", {"tag": tag, "duty": params.release.shadow_duty}, "the shadow")
    with session_scope(settings.catalog_url) as session:
        audit.record(session, "shadow_started", domain, f"model:v{number}", actor=actor, url=url, model_tag=tag)
    return {"domain": domain, "version": number, "model_tag": tag, **answer}


def shadow_stop(domain: str, url: str, actor: str | None = None) -> dict[str, Any]:
    """Stop the shadow of the service at `url`; its final counts are audited."""
    return _stop(domain, url, "shadow", actor)


def canary_stop(domain: str, url: str, actor: str | None = None) -> dict[str, Any]:
    """Stop the canary of the service at `url` (every record back on the champion); its counts are audited."""
    return _stop(domain, url, "canary", actor)


def _stop(domain: str, url: str, kind: str, actor: str | None) -> dict[str, Any]:
    settings, _, _ = resolve(domain)
    answer = admin_call(url, f"/admin/{kind}", {"stop": True}, f"stopping the {kind}")
    stopped = answer.get("stopped")
    if not stopped:  # nothing was on trial: nothing to audit
        return {"domain": domain, **answer}
    counts = ({k: stopped[k] for k in ("mirrored", "failed", "dropped") if k in stopped} if kind == "shadow"
              else {k: stopped[k] for k in ("champion_arm", "canary_arm", "ended") if k in stopped})
    with session_scope(settings.catalog_url) as session:
        audit.record(session, f"{kind}_stopped", domain, f"bento_model:{stopped.get(kind)}", actor=actor, url=url,
                     **counts)
    return {"domain": domain, **answer}


def shadow_report(domain: str, since: float | None = None, tag: str | None = None) -> dict[str, Any]:
    """What the domain's shadow logs say about a challenger (default: the latest shadowed)."""
    from mmops.monitoring import read_ground_truth
    from mmops.serving.shadow import report
    from mmops.stages.data import ground_truth_files

    settings, _, _ = resolve(domain)
    truth, problems = read_ground_truth(ground_truth_files(domain, settings))
    return {**report(settings.prediction_log_dir, domain, truth, since, tag), "ground_truth_problems": problems}


def canary_start(domain: str, url: str, version: int | None = None, share: float | None = None,
                 actor: str | None = None) -> dict[str, Any]:
    """Let a registered version (default: the challenger) answer `share` of the records of the service at
    `url` (default: params.yaml release.canary_share), within the release bounds."""
    settings, params, _ = resolve(domain)
    r = params.release
    bounds = {"share": share or r.canary_share, "min_records": min(50, r.canary_records),
              "max_error_increase": r.max_error_increase, "max_latency_ratio": r.max_latency_ratio,
              "max_prediction_shift": r.max_prediction_shift}
    with session_scope(settings.catalog_url) as session:
        mv = _version(session, domain, version)
        number, tag = mv.version, mv.bento_model_tag
    answer = admin_call(url, "/admin/canary", {"tag": tag, "bounds": bounds}, "the canary")
    with session_scope(settings.catalog_url) as session:
        audit.record(session, "canary_started", domain, f"model:v{number}", actor=actor, url=url, model_tag=tag,
                     bounds=bounds)
    return {"domain": domain, "version": number, "model_tag": tag, **answer}


def canary_status(domain: str, url: str) -> dict[str, Any]:
    """The service's canary: both arms' counts, whether it is live, and why the service ended it."""
    resolve(domain)
    return {"domain": domain, **admin_call(url, "/admin/canary", {}, "the canary's state")}


def canary_conclude(domain: str, url: str, actor: str | None = None, swap: bool = True) -> dict[str, Any]:
    """Decide the canary of the service at `url`: ended by the service (a bound broken) -> stopped and the
    challenger rejected in the registry (`canary_rolled_back`); held its bounds for release.canary_records
    records -> made champion (audited), swapped into the service, canary stopped; otherwise not yet
    (`decided` False, with the counts). swap off: the registry only (the deploy DAG swaps it in, on the
    champion Asset, and ends the canary)."""
    from mmops.registry import promote as do_promote
    from mmops.registry import reject

    settings, params, _ = resolve(domain)
    state = canary_status(domain, url)
    if state.get("kind") != "canary":
        raise MmopsError(f"the service at {url} runs no canary (`mmops canary start --domain {domain}`)")
    tag, served = state["canary"], state["canary_arm"]["records"]
    actor = actor or audit.current_actor()
    if state["live"] and served < params.release.canary_records:
        return {"domain": domain, "decided": False, "promoted": False, "canary": tag, "records": served,
                "needed": params.release.canary_records}
    with session_scope(settings.catalog_url) as session:
        from sqlalchemy import select

        mv = session.scalar(select(ModelVersion).where(ModelVersion.domain == domain,
                                                       ModelVersion.bento_model_tag == tag))
        if mv is None:
            raise NotFoundError(f"the canary {tag} is no registered version of {domain}")
        number = mv.version
    if not state["live"]:
        stopped = _stop(domain, url, "canary", actor)["stopped"]
        with locked_session(f"registry-{domain}", settings.catalog_url) as session:
            reject(session, domain, number, actor, f"canary ended by the service: {state['ended']}")
            audit.record(session, "canary_rolled_back", domain, f"model:v{number}", actor=actor, url=url,
                         reason=state["ended"], champion_arm=stopped["champion_arm"], canary_arm=stopped["canary_arm"])
        return {"domain": domain, "decided": True, "promoted": False, "version": number, "reason": state["ended"]}
    why = (f"canary held its bounds over {served} records (error rate {state['canary_arm']['error_rate']} vs "
           f"{state['champion_arm']['error_rate']}, model time {state['latency_ratio']}x the champion's on batches "
           f"of the same sizes, prediction shift {state['prediction_shift']})")
    with locked_session(f"registry-{domain}", settings.catalog_url) as session:
        do_promote(session, domain, number, actor, why, action="released")
        audit.record(session, "promoted", domain, f"model:v{number}", actor=actor, reason=why, url=url)
    done = {"domain": domain, "decided": True, "promoted": True, "version": number, "reason": why}
    if not swap:
        return done
    service = reload_service(domain, url, tag)
    return {**done, "service": service, "final": _stop(domain, url, "canary", actor)["stopped"]}
