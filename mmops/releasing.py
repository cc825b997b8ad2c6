"""What the release and deploy DAGs call (dags/mmops_release.py): a challenger that passed the promotion gate in
a staged domain (params.yaml release.staged) goes shadow -> approval (a person, in Airflow, where
release.approval names the domain) -> canary -> champion, and the alias change is an Asset event that
schedules the domain's deploy DAG, which swaps the new champion into the running service.

Each step is audited in the ledger; a rejection (by the person, or by the canary's bounds) releases nothing:
the champion keeps serving and the registry says who turned the challenger down and why.
"""

from __future__ import annotations

import time
from typing import Any

from mmops.config import service_url

APPROVE, REJECT = "Approve", "Reject"


def challenger_asset(domain: str) -> Any:
    """Emitted by the training DAG when a challenger passed the gate in a staged domain; schedules the release."""
    from airflow.sdk import Asset

    return Asset(name=f"mmops_{domain}_challenger", uri=f"mmops://{domain}/challenger")


def champion_asset(domain: str) -> Any:
    """Emitted when the release made a new champion (the alias changed); schedules the deploy DAG."""
    from airflow.sdk import Asset

    return Asset(name=f"mmops_{domain}_champion", uri=f"mmops://{domain}/champion")


def announce_champion(domain: str, evaluated: dict[str, Any], params: dict[str, Any] | None = None,
                      outlet_events: Any = None) -> dict[str, Any]:
    """Succeed (and so emit the champion Asset, which starts the deploy DAG) only when evaluate made the
    challenger champion. The run's `deploy` param rides on the event: off, the deploy DAG leaves the service be."""
    from airflow.sdk.exceptions import AirflowSkipException

    from mmops.stages.results import Evaluated

    decision = Evaluated.from_json(evaluated)
    if not decision.promoted:
        raise AirflowSkipException(f"not promoted ({decision.reason}): the champion keeps serving")
    announced = {"version": decision.model_version, "deploy": bool((params or {}).get("deploy", True))}
    if outlet_events is not None:
        outlet_events[champion_asset(domain)].extra = announced
    return announced


def announce_challenger(domain: str, evaluated: dict[str, Any], params: dict[str, Any] | None = None,
                        outlet_events: Any = None) -> dict[str, Any]:
    """Succeed (and so emit the challenger Asset, its event naming the version) only when evaluate left a
    challenger to the release DAG."""
    from airflow.sdk.exceptions import AirflowSkipException

    from mmops.stages.results import Evaluated

    decision = Evaluated.from_json(evaluated)
    if not decision.release:
        raise AirflowSkipException(f"nothing to release: {decision.reason}")
    announced = {"version": decision.model_version, "reason": decision.reason}
    if outlet_events is not None:
        outlet_events[challenger_asset(domain)].extra = {"version": decision.model_version}
    return announced


def _challenger(domain: str) -> tuple[int, str]:
    from mmops.catalog import session_scope
    from mmops.errors import NotFoundError
    from mmops.registry import get_alias

    with session_scope() as session:
        mv, champion = get_alias(session, domain, "challenger"), get_alias(session, domain, "champion")
        if mv is None or (champion is not None and mv.id == champion.id):
            raise NotFoundError(f"{domain} has no challenger to release")
        return mv.version, _gate_reason(session, mv.id)


def _gate_reason(session: Any, model_version_id: int) -> str:
    from sqlalchemy import select

    from mmops.catalog import PromotionEvent

    event = session.scalar(select(PromotionEvent).where(PromotionEvent.model_version_id == model_version_id)
                           .order_by(PromotionEvent.id.desc()))
    return event.reason if event is not None else "no gate decision recorded"


def shadow(domain: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the challenger in shadow until release.shadow_records records were mirrored (at most
    release.shadow_minutes), stop it, and hand on its report with the gate's figures and the model card, as the
    text a person approves on. No service running (MMOPS_SERVICE_URL_<DOMAIN> unset): no shadow, said so."""
    from mmops import pipeline
    from mmops.config import get_settings, load_params
    from mmops.errors import NotFoundError

    settings = get_settings()
    release = load_params(settings.params_path).release
    version, gate = _challenger(domain)
    url = service_url(domain)
    report: dict[str, Any] | None = None
    if url is not None:
        started = time.time()  # this shadow's lines only (an earlier one of the same version is not counted)
        pipeline.shadow_start(domain, url, version)
        deadline = time.monotonic() + release.shadow_minutes * 60
        try:
            while time.monotonic() < deadline:
                try:
                    report = pipeline.shadow_report(domain, started)
                except NotFoundError:
                    report = None
                if report is not None and report["mirrored"] >= release.shadow_records:
                    break
                time.sleep(2)
        finally:
            pipeline.shadow_stop(domain, url)
        try:
            report = pipeline.shadow_report(domain, started)
        except NotFoundError:  # no traffic came: said in the request
            report = None
    return {"version": version, "gate": gate, "shadow": report,
            "summary_md": summary(domain, version, gate, report, url, release.shadow_records)}


def summary(domain: str, version: int, gate: str, report: dict[str, Any] | None, url: str | None,
            wanted: int) -> str:
    """The approval request's body (Markdown): the holdout gate, the shadow's figures, the model card."""
    lines = [f"**{domain} v{version}** passed the promotion gate and asks to become champion.", "",
             f"- **Holdout**: {gate}"]
    if report is None:
        lines.append(f"- **Shadow**: no records mirrored ({'no traffic at ' + url if url else 'no service at MMOPS_SERVICE_URL_' + domain.upper()})")
    else:
        lines += [f"- **Shadow** ({url}): {report['mirrored']} records mirrored (wanted {wanted}), "
                  f"{report['dropped']} dropped, {report['failed']} failed; agreement with the champion "
                  f"{report['agreement']}",
                  f"- **Time per record**: challenger p50 {report['shadow_ms']['p50']} ms / p95 "
                  f"{report['shadow_ms']['p95']} ms; champion p50 {report['champion_ms']['p50']} ms",
                  f"- **On ground truth** ({report['with_ground_truth']} records): challenger "
                  f"{report['shadow_accuracy']}, champion {report['champion_accuracy']}"]
    lines += [f"- **Model card**: `mmops release --domain {domain} --version {version}` (lineage), "
              f"var/registry/{domain}/<checkpoint>/card/", "",
              "Approve to run it as a canary (then champion if it holds its bounds); Reject to keep the champion. "
              "Say why in `reason`: it goes to the audit ledger."]
    return "\n".join(lines)


def decide(domain: str, shadowed: dict[str, Any], answer: dict[str, Any] | None,
           params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record the decision in the catalog: a person's answer (who, why) or the domain's policy (no approval
    needed). A rejection is recorded in the registry and skips the rest: nothing is released."""
    from airflow.sdk.exceptions import AirflowSkipException

    from mmops import audit
    from mmops.catalog import locked_session
    from mmops.registry import reject

    version = int(shadowed["version"])
    if answer is None:
        approved, actor, why = True, "policy:release.approval", f"{domain} is not in release.approval"
    else:
        approved = list(answer.get("chosen_options") or []) == [APPROVE]
        user = answer.get("responded_by_user") or {}
        actor = f"airflow:{user.get('name') or user.get('id') or 'unknown'}"
        why = str((answer.get("params_input") or {}).get("reason") or "").strip() or "(no reason given)"
    with locked_session(f"registry-{domain}") as session:
        if approved:
            audit.record(session, "approved", domain, f"model:v{version}", actor=actor, reason=why,
                         shadow=shadowed.get("shadow"))
        else:
            reject(session, domain, version, actor, f"rejected at approval: {why}")
            audit.record(session, "release_rejected", domain, f"model:v{version}", actor=actor, reason=why,
                         shadow=shadowed.get("shadow"))
    if not approved:
        raise AirflowSkipException(f"v{version} rejected by {actor}: {why}; the champion keeps serving")
    return {"version": version, "approved_by": actor, "reason": why}


def canary(domain: str, decided: dict[str, Any], params: dict[str, Any] | None = None,
           outlet_events: Any = None) -> dict[str, Any]:
    """Run the approved challenger as a canary until it is decided (release.canary_records records held within
    bounds: champion; the service ended it: rejected, and this task fails), at most release.canary_minutes.
    Promoted: the champion alias changes and the champion Asset is emitted (the deploy DAG swaps it in). No
    service running: promoted on the approval alone, said so."""
    from airflow.sdk.exceptions import AirflowFailException

    from mmops import audit, pipeline
    from mmops.catalog import locked_session
    from mmops.config import get_settings, load_params
    from mmops.registry import promote

    release = load_params(get_settings().params_path).release
    version, url = int(decided["version"]), service_url(domain)
    if url is None:
        why = f"approved by {decided['approved_by']} ({decided['reason']}); no running service to canary on"
        with locked_session(f"registry-{domain}") as session:
            promote(session, domain, version, decided["approved_by"], why, action="released")
            audit.record(session, "promoted", domain, f"model:v{version}", actor=decided["approved_by"], reason=why)
        result: dict[str, Any] = {"version": version, "promoted": True, "reason": why}
    else:
        pipeline.canary_start(domain, url, version)
        deadline = time.monotonic() + release.canary_minutes * 60
        result = pipeline.canary_conclude(domain, url, decided["approved_by"], swap=False)
        while not result["decided"] and time.monotonic() < deadline:
            time.sleep(2)
            result = pipeline.canary_conclude(domain, url, decided["approved_by"], swap=False)
        if not result["decided"]:
            pipeline.canary_stop(domain, url)
            raise AirflowFailException(f"the canary answered {result['records']} of {result['needed']} records in "
                                       f"{release.canary_minutes} min: not promoted")
        if not result["promoted"]:
            raise AirflowFailException(f"canary ended by the service: {result['reason']}; v{version} rejected, the "
                                       "champion keeps serving")
    if outlet_events is not None:
        outlet_events[champion_asset(domain)].extra = {"version": version, "approved_by": decided["approved_by"]}
    return {k: v for k, v in result.items() if k in ("version", "promoted", "reason", "records")}


def deploy(domain: str, params: dict[str, Any] | None = None, triggering_asset_events: Any = None) -> dict[str, Any]:
    """Swap the registry's champion into the running service, then end any trial there (a canary of the new
    champion has nothing left to try). Skipped when every champion event that started the run said `deploy:
    false` (a training run asked to promote only); a run started by hand always deploys."""
    from airflow.sdk.exceptions import AirflowSkipException

    from mmops import pipeline

    events = [e for found in (triggering_asset_events or {}).values() for e in found]
    if events and not any((e.extra or {}).get("deploy", True) for e in events):
        latest = max(int((e.extra or {}).get("version") or 0) for e in events)
        raise AirflowSkipException(f"deploy is off for the run that made v{latest} champion: the service keeps "
                                   "what it serves until a deploy run or its next start")
    url = service_url(domain)
    if url is None:
        raise AirflowSkipException(f"no running service to reload (MMOPS_SERVICE_URL_{domain.upper()} unset): the "
                                   "new champion serves from the service's next start")
    served = pipeline.reload_service(domain, url)
    stopped = pipeline.canary_stop(domain, url)
    return {"served": served.get("model_version"), "trial_stopped": (stopped.get("stopped") or {}).get("kind")}
