"""The BentoML service: `POST /predict` on a batch of records with any subset of the domain's modalities.

Two services: `Svc` validates requests (every client mistake is a 400 with a message) and logs what it saw
for drift monitoring; `ModelRunner` holds the model and batches calls adaptively across requests.

Which model: MMOPS_MODEL_TAG, else `mmops-$MMOPS_DOMAIN:latest` from the BentoML model store; `POST
/admin/reload` swaps in another without a restart. `GET /metadata` describes the model and its inputs.
MMOPS_API_TOKEN turns on bearer auth, MMOPS_MAX_BODY_BYTES bounds request bodies (middleware.py). The
prediction log is written off the request path (predlog.py), one file per replica with MMOPS_REPLICA. Reference: docs/serving.md.
Start with `mmops serve --domain D` (or `bentoml serve mmops.serving.service:Svc` with those variables set).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, cast

import bentoml
from bentoml.exceptions import BentoMLException, NotFound
from pydantic import Field

from mmops import faults
from mmops.card import ModelCard
from mmops.domains import DomainPack
from mmops.errors import BadInputError
from mmops.modalities.image import MAX_IMAGE_B64_CHARS
from mmops.serving import LOAD_FAILED
from mmops.serving.middleware import BearerAuth, BodyLimit, RequestCheck
from mmops.serving.predlog import Entry, PredictionLog, log_name, to_line
from mmops.serving.schemas import (
    MAX_RECORDS,
    MODEL_TAG,
    ErrorOut,
    PredictionOut,
    RecordIn,
    decode_record,
    file_to_wire,
    record_warnings,
)
from mmops.tasks import task_of

log = logging.getLogger("mmops.serving")


# Adaptive batching of model calls across requests (MMOPS_BATCHING=0 turns it off: benchmarks/bench_serve.py
# measures both, side by side).
def _flag(name: str) -> bool:
    return os.environ.get(name, "1").strip().lower() not in ("0", "false", "off", "no")


BATCHING = _flag("MMOPS_BATCHING")
# The prediction log that `mmops monitor` reads (MMOPS_PREDICTION_LOG=0: none, e.g. to measure its cost).
LOGGING = _flag("MMOPS_PREDICTION_LOG")


def model_tag() -> str:
    return os.environ.get("MMOPS_MODEL_TAG") or f"mmops-{os.environ.get('MMOPS_DOMAIN', 'security')}:latest"


@contextmanager
def said_if_it_fails(tag: str) -> Iterator[None]:
    """A failed model load said on stderr (the log) for client.wait_ready, not left to BentoML's restarts."""
    try:
        yield
    except Exception as exc:
        print(f"{LOAD_FAILED} {tag}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        raise


def served_model() -> Any:
    """The BentoML model this process serves."""
    return bentoml.models.get(model_tag())


# BentoML's client from Svc to this service replaces its HTTP session every 100 calls (and every 300 s),
# closing the old one under calls in flight: "Server disconnected" (215 of 1024 requests answered 500 at 64
# clients, even with retries). One session for the process's life; Svc._infer's retry stays for rare drops.
@bentoml.service(name="mmops_model", workers=1, traffic={"timeout": 60},
                 runner_connection={"max_requests": 2**62, "max_age": 10.0 * 365 * 86400})
class ModelRunner:
    """Holds the model; one worker, so a reload reaches every model call (scale out: docs/serving.md)."""

    def __init__(self) -> None:
        with said_if_it_fails(model_tag()):
            self._load(model_tag())

    def _load(self, tag: str) -> dict[str, Any]:
        from mmops.card import read_card

        bento_model = bentoml.models.get(tag)
        card = read_card(Path(bento_model.path))
        task = task_of(card.pack.task)
        predictor = task.load(Path(bento_model.path))
        meta = {"model_version": str(bento_model.tag), "checkpoint_sha256": card.checkpoint_sha256,
                "classes": card.classes}
        self._current = (task, predictor, meta)  # one assignment: a batch in flight keeps what it started with
        log.info("serving %s", meta["model_version"])
        return meta

    # Adaptive batching across requests. A generous latency budget: on CPU a short one sheds load (issue 6
    # reports 514 of 800 requests rejected at max_latency_ms=50 with 32 clients; with the pretrained
    # MobileNetV2 encoder, 2000 ms still shed 9 of 96 requests with 503 on a 2-core CI machine).
    @bentoml.api(batchable=BATCHING, max_batch_size=64, max_latency_ms=10000)
    def infer(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self._predict(records)

    # The same call without the batcher: Svc sends here a request that would wait alone (nothing else in
    # flight), so one client gets exactly the unbatched path and batching costs nothing when idle.
    @bentoml.api
    def infer_now(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self._predict(records)

    def _predict(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        task, predictor, meta = self._current
        # Records were validated by Svc; decoding again here is cheap and keeps the wire format JSON.
        values = [decode_record(predictor.pack, r)[0] for r in records]
        return [{**a, **meta} for a in task.serve(predictor, values, embeddings=LOGGING)]

    @bentoml.api
    def reload(self, tag: str = "") -> dict[str, Any]:
        """Load `tag` (default: what MMOPS_MODEL_TAG / the domain's latest names now) and swap it in."""
        faults.point("serve.reload")
        return self._load(tag or model_tag())


@bentoml.service(name="mmops", traffic={"timeout": 60})
class Svc:
    runner = bentoml.depends(ModelRunner)
    pack: DomainPack
    card: ModelCard
    version: str

    def __init__(self) -> None:
        from mmops.card import read_card
        from mmops.config import get_settings

        with said_if_it_fails(model_tag()):
            bento_model = served_model()
            self._describe(read_card(Path(bento_model.path)), str(bento_model.tag))
        self.log = (PredictionLog(get_settings().prediction_log_dir / log_name(self.pack.name), to_line)
                    if LOGGING else None)
        self._in_flight = 0  # model calls awaiting an answer (one event loop: no lock needed)
        _LIVE["svc"] = self

    def _describe(self, card: ModelCard, version: str) -> None:
        self.card, self.pack, self.version = card, card.pack, version

    @bentoml.on_shutdown
    def _close_log(self) -> None:
        if self.log is not None:
            self.log.close()

    @bentoml.api(route="/predict")
    async def predict(
        self, records: Annotated[list[RecordIn], Field(min_length=1, max_length=MAX_RECORDS)],
    ) -> list[PredictionOut]:
        """Predict a batch of records, each with any subset of the domain's modalities (a missing one is
        predicted around, and said so in `missing_modalities` and `warnings`). Inputs are decoded and checked
        as ingest checks landed files; any mistake is a 400 naming the record and modality. Answers come in
        the order of the records, each with the class probabilities and the model version that gave them."""
        try:
            return await self.answer(records)
        except BadInputError as exc:  # answered here: BentoML's own 4xx bodies are lists, not the spec's object
            return cast(list[PredictionOut], refuse(400, str(exc)))

    async def answer(self, records: list[RecordIn]) -> list[PredictionOut]:
        """/predict and /predict/upload alike; BadInputError for a client's mistake. A plain method: BentoML
        routes a call of an API method from outside its endpoint back through HTTP (and the auth middleware),
        so the upload route calls this."""
        if not records:
            raise BadInputError("records is empty")
        if len(records) > MAX_RECORDS:
            raise BadInputError(f"{len(records)} records in one request; at most {MAX_RECORDS}")
        pack = self.pack
        stats, warnings = [], []
        for rec in records:
            values, st = decode_record(pack, rec)
            stats.append(st)
            warnings.append(record_warnings(pack, rec, values))
        answers = await self._infer([r.model_dump() for r in records])
        task = task_of(pack.task)
        out, logged = [], []
        for rec, a, warn in zip(records, answers, warnings, strict=True):
            try:
                fields = task.answer(a, a["classes"])
            except BadInputError as exc:
                raise BadInputError(f"record {rec.id!r}: {exc}") from None
            logged.append(fields.pop("outputs"))
            out.append(PredictionOut(id=rec.id, model_version=a["model_version"], warnings=warn,
                                     missing_modalities=[m for m in pack.modality_names if m not in rec.inputs],
                                     **fields))
        self._log(records, stats, out, answers, logged)
        return out

    @bentoml.api(route="/admin/reload")
    async def reload(self, tag: Annotated[str, Field(pattern=MODEL_TAG)] = "") -> dict[str, Any]:
        """Swap in a new model without a restart: the model service loads it first, then requests go to it;
        requests already in flight finish on the old one. Behind the bearer token when one is set."""
        from mmops.card import read_card

        try:
            new = bentoml.models.get(tag or model_tag())
        except NotFound:  # before anything changes
            return cast(dict[str, Any], refuse(404, f"no packaged model {tag or model_tag()!r} in the model store"))
        except (ValueError, BentoMLException) as exc:  # not a tag (RequestCheck refuses most before here)
            return cast(dict[str, Any], refuse(400, f"{tag!r} is not a model tag: {exc}"))
        card = read_card(Path(new.path))
        if card.domain != self.pack.name:
            return cast(dict[str, Any], refuse(
                400, f"{new.tag} is a {card.domain} model; this service serves {self.pack.name}"))
        # Requests validated against the old inputs may reach the new model while it swaps in: only a model
        # that takes the same inputs may be hot-swapped; one that does not needs a rolling restart.
        changed = input_spec_changes(self.pack, card.pack)
        if changed:
            return cast(dict[str, Any], refuse(
                409, f"{new.tag} takes other inputs than the served model ({'; '.join(changed)}): deploy it with "
                     "a rolling restart (docs/serving.md), not a reload"))
        meta = await self.runner.to_async.reload(str(new.tag))
        self._describe(card, str(new.tag))
        log.info("reloaded: now serving %s", meta["model_version"])
        return meta

    async def _infer(self, payload: list[dict[str, Any]], attempts: int = 3) -> list[dict[str, Any]]:
        """Call the model service, retrying a dropped connection (inference is idempotent). BentoML 1.4.40's
        client closes a replaced session under calls in flight (_bentoml_impl/client/proxy2.py,
        SessionManager); ModelRunner's runner_connection setting keeps one session, and this retry covers
        what is left (a model-service worker restarting)."""
        import asyncio

        import aiohttp

        call = self.runner.to_async.infer if self._in_flight else self.runner.to_async.infer_now
        self._in_flight += 1
        try:
            for attempt in range(1, attempts + 1):
                try:
                    answers: list[dict[str, Any]] = await call(payload)
                    return answers
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                    if attempt == attempts:
                        raise
                    log.warning("model call dropped (%s); retry %d/%d", exc, attempt, attempts - 1)
                    await asyncio.sleep(0.05 * attempt)
        finally:
            self._in_flight -= 1
        raise AssertionError("unreachable")

    def _log(self, records: list[RecordIn], stats: list[dict], out: list[PredictionOut],
             answers: list[dict[str, Any]], outputs: list[dict[str, float]]) -> None:
        if self.log is not None:  # serialized by the log's writer thread (predlog.to_line), not here
            now = time.time()
            self.log.put([Entry(now, r.id, o.model_version, a["checkpoint_sha256"], s, o.label,
                                a.get("probabilities", []), a.get("embeddings", {}), n)
                          for r, s, o, a, n in zip(records, stats, out, answers, outputs, strict=True)])

    def metadata(self) -> dict[str, Any]:
        card = self.card
        return {
            "service": "mmops", "domain": self.pack.name, "model_version": self.version,
            "checkpoint_sha256": card.checkpoint_sha256, "dataset_version": card.dataset_version,
            "val_metrics": card.val_metrics, "classes": list(self.pack.classes),
            "modalities": [m.model_dump(mode="json") for m in self.pack.modalities],
            "limits": {"max_records": MAX_RECORDS, "max_image_base64_chars": MAX_IMAGE_B64_CHARS},
            "auth": "bearer" if os.environ.get("MMOPS_API_TOKEN") else "none",
            "prediction_log": self.log.stats() if self.log is not None else None,
        }


def refuse(status: int, message: str, detail: str | None = None) -> Any:
    """The service's error answer (`ErrorOut`), returned by a handler rather than raised: BentoML wraps the
    body of a raised 4xx in a list, which is not what the spec declares."""
    from starlette.responses import JSONResponse

    log.info("%d: %s", status, message[:300])
    return JSONResponse(ErrorOut(error=message, detail=detail).model_dump(), status_code=status)


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


_LIVE: dict[str, Svc] = {}


async def _metadata(request: Any) -> Any:
    """GET /metadata: the served model (version, checkpoint hash, dataset version, validation metrics), its
    classes and the inputs it takes (each modality's spec: channels, length, sample rate, image size), the
    request limits, whether a token is required, and the prediction log's counters."""
    from starlette.responses import JSONResponse

    svc = _LIVE.get("svc")
    if svc is None:
        return refuse(503, "the service is still starting")
    return JSONResponse(svc.metadata())


async def _upload(request: Any) -> Any:
    """POST /predict/upload: one record as multipart/form-data, a file per modality (the field name is the
    modality: an image file, a sensor CSV, a text file, each decoded and checked exactly as ingest decodes
    landed files) and an optional `id` field. Answers like /predict, as a list of one."""
    from pydantic import ValidationError
    from starlette.responses import JSONResponse

    from mmops.modalities import MAX_FILE_BYTES
    from mmops.serving.schemas import validation_error

    svc = _LIVE.get("svc")
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


class _LiveSpec:
    """GET /docs.json answers the whole API of this service, for its domain: BentoML's spec of the class
    completed with the mounted routes, auth, the error shape, and this domain's inputs (mmops.serving.spec).
    BentoML's own answers only the API methods, with generic inputs."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        svc = _LIVE.get("svc")
        if scope["type"] != "http" or scope.get("path") != "/docs.json" or svc is None:
            await self.app(scope, receive, send)
            return
        from starlette.responses import JSONResponse

        await JSONResponse(openapi(svc.pack))(scope, receive, send)


def openapi(pack: Any = None) -> dict[str, Any]:
    """This service's whole API (mmops.serving.spec): generic, or for `pack`'s domain exactly."""
    from mmops.serving.spec import build

    return build(_service.openapi_spec.asdict(), _metadata, _upload, pack)


def _extra_routes() -> Any:
    from starlette.applications import Starlette
    from starlette.routing import Route

    return Starlette(routes=[Route("/metadata", _metadata, methods=["GET"]),
                             Route("/predict/upload", _upload, methods=["POST"])])


# GET /metadata and POST /predict/upload beside BentoML's routes (a passive mount answers only its own
# paths); the middleware wraps every route, the first added outermost: bearer auth first (probes and
# /metrics stay open), then the body-size limit, then the API routes' body checks, and this domain's
# /docs.json.
_service: Any = Svc  # a bentoml Service once decorated
_service.mount_asgi_app(_extra_routes(), path="/")
_service.add_asgi_middleware(BearerAuth)
_service.add_asgi_middleware(BodyLimit)
_service.add_asgi_middleware(RequestCheck)
_service.add_asgi_middleware(_LiveSpec)
