"""The service's routes beside its BentoML API methods (`GET /metadata`, `GET /card`, `POST /predict/upload`), mounted as
a Starlette app, and what they share with the API methods: the one error answer (`refuse`) and the check
that a model may be hot-swapped (`input_spec_changes`). The running service registers itself in `LIVE`."""

from __future__ import annotations

import logging
from typing import Any

from mmops.domains import DomainPack
from mmops.errors import BadInputError
from mmops.serving.schemas import ErrorOut, RecordIn, file_to_wire

log = logging.getLogger("mmops.serving")


def refuse(status: int, message: str, detail: str | None = None, headers: dict[str, str] | None = None) -> Any:
    """The service's error answer (`ErrorOut`), returned by a handler rather than raised: BentoML wraps the
    body of a raised 4xx in a list, which is not what the spec declares."""
    from starlette.responses import JSONResponse

    log.info("%d: %s", status, message[:300])
    return JSONResponse(ErrorOut(error=message, detail=detail).model_dump(), status_code=status, headers=headers)


def input_spec_changes(old: DomainPack, new: DomainPack) -> list[str]:
    """How `new`'s inputs differ from `old`'s (modalities, their kinds, shapes and channels); classes may
    change freely: every answer carries its model's classes."""
    before = {m.name: m.model_dump(mode="json") for m in old.modalities}
    after = {m.name: m.model_dump(mode="json") for m in new.modalities}
    changes = [f"modality {n} removed" for n in before if n not in after]
    changes += [f"modality {n} added" for n in after if n not in before]
    for n in before.keys() & after.keys():
        fields = sorted(k for k in before[n].keys() | after[n].keys() if before[n].get(k) != after[n].get(k))
        changes += [f"{n}.{k}: {before[n].get(k)!r} -> {after[n].get(k)!r}" for k in fields]
    return changes


class Refused(Exception):
    """A model this service will not take, with the status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def swappable(tag: str, pack: DomainPack) -> tuple[Any, Any, Any]:
    """(BentoML model, card, complete card) of `tag`, when this service (serving `pack`) may take it in place of
    or beside its model: packaged with a complete card, of the same domain, taking the same inputs (requests
    validated against the old inputs may reach it). Refused otherwise, before anything changes."""
    from pathlib import Path

    import bentoml
    from bentoml.exceptions import BentoMLException, NotFound

    from mmops.card import read_card
    from mmops.card.complete import read_served
    from mmops.errors import MmopsError

    try:
        new = bentoml.models.get(tag)
    except NotFound:
        raise Refused(404, f"no packaged model {tag!r} in the model store") from None
    except (ValueError, BentoMLException) as exc:  # not a tag (RequestCheck refuses most before here)
        raise Refused(400, f"{tag!r} is not a model tag: {exc}") from None
    card = read_card(Path(new.path))
    try:
        complete = read_served(Path(new.path), f"loading {new.tag}")
    except MmopsError as exc:  # packaged before cards were complete, or by hand: not served
        raise Refused(409, str(exc)) from None
    if card.domain != pack.name:
        raise Refused(400, f"{new.tag} is a {card.domain} model; this service serves {pack.name}")
    changed = input_spec_changes(pack, card.pack)
    if changed:
        raise Refused(409, f"{new.tag} takes other inputs than the served model ({'; '.join(changed)}): deploy it "
                           "with a rolling restart (docs/serving.md), not a reload")
    return new, card, complete


LIVE: dict[str, Any] = {}  # "svc": the running Svc, once it has started


async def metadata(request: Any) -> Any:
    """GET /metadata: the served model (version, checkpoint hash, dataset version, validation metrics), its
    classes and the inputs it takes (each modality's spec: channels, length, sample rate, image size), the
    request limits, whether a token is required, and the prediction log's counters."""
    from starlette.responses import JSONResponse

    svc = LIVE.get("svc")
    if svc is None:
        return refuse(503, "the service is still starting")
    return JSONResponse(svc.metadata())


CARD_FORMATS = ("json", "markdown", "html")


async def card(request: Any) -> Any:
    """GET /card[?format=json|markdown|html]: the served model's complete model card (intended use and users,
    training data with its sources' licences, metrics overall, per class and per subset of modalities,
    calibration, limitations, approval), as the bento carries it."""
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse

    from mmops.card.render import to_html, to_markdown

    svc = LIVE.get("svc")
    if svc is None:
        return refuse(503, "the service is still starting")
    fmt = request.query_params.get("format", "json")
    if fmt == "json":
        return JSONResponse(svc.complete.model_dump(mode="json"))
    if fmt == "markdown":
        return PlainTextResponse(to_markdown(svc.complete), media_type="text/markdown; charset=utf-8")
    if fmt == "html":
        return HTMLResponse(to_html(svc.complete))
    return refuse(400, f"format {fmt[:40]!r} is not one of {list(CARD_FORMATS)}")


async def upload(request: Any) -> Any:
    """POST /predict/upload: one record as multipart/form-data, a file per modality (the field name is the
    modality: an image file, a sensor CSV, a text file, each decoded and checked exactly as ingest decodes
    landed files) and an optional `id` field. Answers like /predict, as a list of one."""
    from pydantic import ValidationError
    from starlette.responses import JSONResponse

    from mmops.modalities import MAX_FILE_BYTES
    from mmops.serving.schemas import validation_error

    svc = LIVE.get("svc")
    if svc is None:
        return refuse(503, "the service is still starting")
    pack = svc.pack
    try:
        form = await request.form(max_files=len(pack.modalities), max_fields=len(pack.modalities) + 1,
                                  max_part_size=MAX_FILE_BYTES)
    except Exception as exc:  # not multipart, too many parts, a part too large: the client's to fix
        return refuse(400, f"expected multipart/form-data with one file per modality: {exc}")
    unknown = sorted(set(form.keys()) - {"id", *pack.modality_names})
    if unknown:
        return refuse(400, f"unknown fields {unknown}; {pack.name} takes files named {pack.modality_names} and 'id'")
    inputs: dict[str, Any] = {}
    for name in pack.modality_names:
        part = form.get(name)
        if part is None:
            continue
        data = part.encode("utf-8") if isinstance(part, str) else await part.read()
        try:
            inputs[name] = file_to_wire(pack.modality(name), data)
        except BadInputError as exc:
            return refuse(400, f"{name}: {exc}")
    if not inputs:
        return refuse(400, f"no files; {pack.name} takes files named {pack.modality_names}")
    record_id = form.get("id")
    try:
        record = RecordIn(id=record_id if isinstance(record_id, str) else None, inputs=inputs)
        out = await svc.answer([record])
    except ValidationError as exc:
        err = validation_error(exc, "form")
        return refuse(400, err.error, err.detail)
    except BadInputError as exc:
        return refuse(400, str(exc))
    return JSONResponse([o.model_dump() for o in out])




def mounted() -> Any:
    """The routes mounted beside BentoML's."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    return Starlette(routes=[Route("/metadata", metadata, methods=["GET"]), Route("/card", card, methods=["GET"]),
                             Route("/predict/upload", upload, methods=["POST"])])
