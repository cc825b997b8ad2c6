"""The BentoML service: `POST /predict` on a batch of records with any subset of the domain's modalities.

`Svc` validates requests (every client mistake is a 400 with a message), answers them with the model and logs
what it saw for drift monitoring. The model runs in its process, batched across requests (the default layout),
or in a model service of its own, `ModelRunner` (MMOPS_SERVE_LAYOUT=split): mmops/serving/model.py.

Which model: MMOPS_MODEL_TAG, else `mmops-$MMOPS_DOMAIN:latest` from the BentoML model store; `POST
/admin/reload` swaps in another without a restart. `GET /metadata` describes the model and its inputs.
MMOPS_API_TOKEN turns on bearer auth, MMOPS_MAX_BODY_BYTES bounds request bodies (middleware.py). The
prediction log is written off the request path (predlog.py), one file per replica with MMOPS_REPLICA. Reference: docs/serving.md.
Start with `mmops serve --domain D` (or `bentoml serve mmops.serving.service:Svc` with those variables set).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from pathlib import Path
from typing import Annotated, Any, cast

import bentoml
from bentoml.validators import ContentType
from pydantic import Field

from mmops.card import ModelCard
from mmops.card.complete import CompleteCard
from mmops.domains import DomainPack
from mmops.errors import BadInputError
from mmops.modalities.image import MAX_IMAGE_B64_CHARS
from mmops.serving.canary import Bounds
from mmops.serving.middleware import BearerAuth, BodyLimit, RequestCheck
from mmops.serving.model import MAX_BATCH, LocalModel, RemoteModel, ServedModel, layout
from mmops.serving.predlog import Entry, PredictionLog, held_bytes, log_name, to_line, with_stats
from mmops.serving.routes import LIVE, Refused, metadata, mounted, refuse, swappable, upload
from mmops.serving.schemas import (
    EXPLAIN_QUEUE,
    MAX_EXPLAIN,
    MAX_RECORDS,
    MODEL_TAG,
    ExplanationOut,
    PredictionOut,
    RecordIn,
    decode_record,
    record_warnings,
)
from mmops.serving.shadow import DUTY
from mmops.serving.store import model_tag, said_if_it_fails
from mmops.serving.workers import Peers, serve_workers, shared_folder
from mmops.tasks import task_of

log = logging.getLogger("mmops.serving")
# A request's time limit: /explain takes seconds per record (a clip of video about 17 s on one CPU thread), so
# the queue it may wait in is bounded (EXPLAIN_QUEUE records; a request beyond it is a 503 at once) and the
# limit covers a full queue of the slowest records.
TIMEOUT_S = 300
EXPLANATION_FIELDS = ("label", "explained", "value", "base", "probabilities", "modalities", "model_version")


# Batching of model calls across requests (MMOPS_BATCHING=0 turns it off: benchmarks/bench_serve.py measures
# both, side by side).
def _flag(name: str) -> bool:
    return os.environ.get(name, "1").strip().lower() not in ("0", "false", "off", "no")


BATCHING = _flag("MMOPS_BATCHING")
# The prediction log that `mmops monitor` reads (MMOPS_PREDICTION_LOG=0: none, e.g. to measure its cost).
LOGGING = _flag("MMOPS_PREDICTION_LOG")
LAYOUT = layout()  # where the model runs: in this process (`one`) or a model service (`split`); model.py
WORKERS = serve_workers()  # API workers, each with its model (workers.py)
if WORKERS > 1 and LAYOUT == "split":
    raise ValueError("MMOPS_SERVE_WORKERS > 1 runs a model in each worker (the layout `one`); the split layout's "
                     "model service is one process")


# The split layout's model service (MMOPS_SERVE_LAYOUT=split; model.py). BentoML's client from Svc to this
# service replaces its HTTP session every 100 calls (and every 300 s), closing the old one under calls in
# flight: "Server disconnected" (215 of 1024 requests answered 500 at 64 clients, even with retries). One
# session for the process's life; RemoteModel.infer's retry stays for rare drops.
@bentoml.service(name="mmops_model", workers=1, traffic={"timeout": TIMEOUT_S},
                 runner_connection={"max_requests": 2**62, "max_age": 10.0 * 365 * 86400})
class ModelRunner:
    """Holds the model; one worker, so a reload reaches every model call (scale out: docs/serving.md)."""

    def __init__(self) -> None:
        with said_if_it_fails(model_tag()):
            self.model = _served_model()

    # Adaptive batching across requests. A generous latency budget: on CPU a short one sheds load (issue 6
    # reports 514 of 800 requests rejected at max_latency_ms=50 with 32 clients; with the pretrained
    # MobileNetV2 encoder, 2000 ms still shed 9 of 96 requests with 503 on a 2-core CI machine).
    @bentoml.api(batchable=BATCHING, max_batch_size=MAX_BATCH, max_latency_ms=10000)
    def infer(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.model.predict_wire(records)

    # The same call without the batcher: Svc sends here a request that would wait alone (nothing else in
    # flight), so one client gets exactly the unbatched path and batching costs nothing when idle.
    @bentoml.api
    def infer_now(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.model.predict_wire(records)

    @bentoml.api
    def trial(self, kind: str = "", tag: str = "", bounds: dict[str, Any] | None = None,
              stop: bool = False) -> dict[str, Any]:
        return self.model.trial(kind, tag, bounds, stop)

    @bentoml.on_shutdown
    def _stop_trial(self) -> None:
        self.model.close()

    # Explanations take seconds (a backward pass per path step and modality): never batched with answers.
    @bentoml.api
    def explain(self, records: list[dict[str, Any]], target: str | None = None) -> list[dict[str, Any]]:
        pack = self.model.current[1].pack
        return self.model.explain([decode_record(pack, r, stats=False)[0] for r in records], target)

    @bentoml.api
    def reload(self, tag: str = "") -> dict[str, Any]:
        """Load `tag` (default: what MMOPS_MODEL_TAG / the domain's latest names now) and swap it in."""
        return self.model.reload(tag or model_tag())


def _served_model(tag: str = "") -> ServedModel:
    from mmops.config import get_settings

    return ServedModel(tag or model_tag(), get_settings().prediction_log_dir, LOGGING, WORKERS)


DEFAULT_BOUNDS = Bounds()
# The answers' media type, said: without it BentoML 1.4.40 derives it from the output's JSON schema, generated
# anew for every response (_bentoml_sdk/io_models.py, IOMixin.mime_type): 44 % of the API worker's time at
# 32 clients (py-spy, security).
JSON = ContentType("application/json")


# One worker by default: the model lives in it (layout `one`), or it reaches the one model service (`split`).
# MMOPS_SERVE_WORKERS=n: n workers, each with its model; a reload reaches them all (workers.py). Scale out
# with replicas (docs/serving.md).
@bentoml.service(name="mmops", workers=WORKERS, traffic={"timeout": TIMEOUT_S})
class Svc:
    if LAYOUT == "split":
        runner = bentoml.depends(ModelRunner)
    model: LocalModel | RemoteModel
    pack: DomainPack
    card: ModelCard
    complete: CompleteCard  # GET /card; each answer's expected figures for the modalities it got
    version: str

    def __init__(self) -> None:
        from mmops.card import read_card
        from mmops.card.complete import read_served
        from mmops.config import get_settings

        with said_if_it_fails(model_tag()):
            self.peers = self._peers()
            published = self.peers.state() if self.peers else {"generation": 0}
            tag = str(published.get("model") or model_tag())  # a restarted worker serves what its peers serve
            bento_model = bentoml.models.get(tag)
            where = Path(bento_model.path)
            self._describe(read_card(where), read_served(where, f"serving {bento_model.tag}"), str(bento_model.tag))
            self.model = RemoteModel(self.runner) if LAYOUT == "split" else LocalModel(_served_model(tag), BATCHING)
        if self.peers is not None:
            self.peers.ack(int(published["generation"]))
            self.peers.watch(self._apply)
        worker = self.peers.index if self.peers else None
        self.log = (PredictionLog(get_settings().prediction_log_dir / log_name(self.pack.name, worker), to_line,
                                  prepare=lambda items: with_stats(self.pack, items)) if LOGGING else None)
        self._explaining = 0  # records in /explain calls admitted and not yet answered
        LIVE["svc"] = self
        # Everything loaded so far (torch, the model, BentoML, pydantic's schemas) lives as long as the worker:
        # out of the collector's sight, a full collection no longer walks it. Its pauses had set the tail:
        # security at 32 clients, p99 247-251 ms before, 105-110 ms after (p50 70-73 ms both; ad hoc).
        gc.collect()
        gc.freeze()

    def _describe(self, card: ModelCard, complete: CompleteCard, version: str) -> None:
        self.card, self.complete, self.pack, self.version = card, complete, card.pack, version

    @staticmethod
    def _peers() -> Peers | None:
        """This worker among the service's workers, when there are several."""
        if WORKERS == 1:
            return None
        if os.environ.get("MMOPS_SHADOW_TAG"):
            raise ValueError("MMOPS_SHADOW_TAG: a shadow judges the traffic of one worker; run it with "
                             "MMOPS_SERVE_WORKERS=1")
        from bentoml._internal.context import server_context

        return Peers(shared_folder(), server_context.worker_index or 1, WORKERS)

    def _apply(self, state: dict[str, Any]) -> None:
        """A generation another worker published (workers.py): swap in its model, here."""
        tag = str(state.get("model") or "")
        if not tag or tag == self.version:
            return
        new, card, complete = swappable(tag, self.pack)  # Refused: this worker's error in its ack
        assert isinstance(self.model, LocalModel)
        self.model.model.reload(str(new.tag))
        self._describe(card, complete, str(new.tag))
        log.info("reloaded as worker %d was told: now serving %s", self.peers.index if self.peers else 0, new.tag)

    @bentoml.on_shutdown
    def _close(self) -> None:
        self.model.close()
        if self.log is not None:
            self.log.close()

    @bentoml.api(route="/predict")
    async def predict(
        self, records: Annotated[list[RecordIn], Field(min_length=1, max_length=MAX_RECORDS)],
    ) -> Annotated[list[PredictionOut], JSON]:
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
        values, warnings = [], []
        for rec in records:
            decoded = decode_record(pack, rec, stats=False)[0]  # the log's writer computes the statistics
            values.append(decoded)
            warnings.append(record_warnings(pack, rec, decoded))
        answers = await self.model.infer(records, values)
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
                                     expected=self.complete.expected(list(rec.inputs), task.modality_metrics[1]),
                                     **fields))
        self._log(records, values, out, answers, logged)
        return out

    @bentoml.api(route="/explain")
    async def explain(
        self, records: Annotated[list[RecordIn], Field(min_length=1, max_length=MAX_EXPLAIN)],
        target: Annotated[str, Field(max_length=200)] = "",
    ) -> Annotated[list[ExplanationOut], JSON]:
        """Why the model answered as it did, for each record: per modality its exact Shapley value (its share
        of the answer above what the model says with no input) and a map inside it (integrated gradients
        over a sensor's time x channel, an image's pixels with Grad-CAM, a text's tokens; for an anomaly
        detector, each patch's or window's distance to normal). Checked as /predict checks; at most
        MAX_EXPLAIN records, as each takes seconds. `target`: a class to explain instead of the answer."""
        chosen = target or None
        try:
            if chosen is not None and task_of(self.pack.task).name == "anomaly":
                raise BadInputError("an anomaly detector explains its score: there is no class to choose")
            if chosen is not None and chosen not in self.pack.classes:
                raise BadInputError(f"target {target!r} is not one of the model's classes {list(self.pack.classes)}")
            values = [decode_record(self.pack, rec, stats=False)[0] for rec in records]
            warnings = [record_warnings(self.pack, rec, v) for rec, v in zip(records, values, strict=True)]
        except BadInputError as exc:
            return cast(list[ExplanationOut], refuse(400, str(exc)))
        if self._explaining + len(records) > EXPLAIN_QUEUE:  # seconds each, one at a time: a bounded queue
            return cast(list[ExplanationOut], refuse(
                503, f"{self._explaining} records are being explained, at most {EXPLAIN_QUEUE} at a time: retry "
                     "shortly", headers={"Retry-After": "5"}))
        self._explaining += len(records)
        try:
            answers = await self.model.explain(records, values, chosen)
        finally:
            self._explaining -= len(records)
        if answers and "error" in answers[0]:
            return cast(list[ExplanationOut], refuse(400, answers[0]["error"]))
        return [ExplanationOut(id=rec.id, warnings=warn, **{k: a.get(k) for k in EXPLANATION_FIELDS},
                               missing_modalities=[m for m in self.pack.modality_names if m not in rec.inputs])
                for rec, a, warn in zip(records, answers, warnings, strict=True)]

    @bentoml.api(route="/admin/reload")
    async def reload(self, tag: Annotated[str, Field(pattern=MODEL_TAG)] = "") -> dict[str, Any]:
        """Swap in a new model without a restart: the service loads it first, then requests go to it;
        requests already in flight finish on the old one. Behind the bearer token when one is set."""
        try:
            new, card, complete = swappable(tag or model_tag(), self.pack)
        except Refused as exc:
            return cast(dict[str, Any], refuse(exc.status, str(exc)))
        meta = await self.model.reload(str(new.tag))
        self._describe(card, complete, str(new.tag))
        log.info("reloaded: now serving %s", meta["model_version"])
        if self.peers is not None:  # answered once every worker serves it
            generation = await asyncio.to_thread(self.peers.publish, {"model": str(new.tag)})
            failed = await asyncio.to_thread(self.peers.wait, generation, TIMEOUT_S - 10)
            if failed:
                return cast(dict[str, Any], refuse(500, f"worker {self.peers.index} serves {new.tag}; not "
                                                        + "; ".join(f"worker {i}: {why}" for i, why in failed.items())))
            meta = {**meta, "workers": WORKERS}
        return meta

    @bentoml.api(route="/admin/shadow")
    async def shadow(self, tag: Annotated[str, Field(pattern=MODEL_TAG)] = "", stop: bool = False,
                     duty: Annotated[float, Field(ge=0.01, le=1)] = DUTY) -> dict[str, Any]:
        """Run the model `tag` in shadow beside the served one: it gets the records the served one answers (while
        computing at most `duty` of the time), its answers are logged for `mmops shadow report`, never
        returned. `stop`: end it; neither: its state."""
        return await self._trial("shadow", tag, {"duty": duty}, stop)

    @bentoml.api(route="/admin/canary")
    async def canary(self, tag: Annotated[str, Field(pattern=MODEL_TAG)] = "", bounds: Bounds = DEFAULT_BOUNDS,
                     stop: bool = False) -> dict[str, Any]:
        """Let the model `tag` answer a share of the records (`bounds.share`, sticky by record id), ended by the
        service when it does worse than the served one by `bounds`; `stop`: end it; neither: its state."""
        return await self._trial("canary", tag, bounds.model_dump(), stop)

    async def _trial(self, kind: str, tag: str, bounds: dict[str, Any] | None, stop: bool) -> dict[str, Any]:
        if WORKERS > 1:
            return cast(dict[str, Any], refuse(409, f"a {kind} judges the traffic of one worker; this service runs "
                                                    f"{WORKERS} (MMOPS_SERVE_WORKERS): run trials on a one-worker "
                                                    "service"))
        if tag:  # refused as a reload would refuse the model, before anything changes
            try:
                swappable(tag, self.pack)
            except Refused as exc:
                return cast(dict[str, Any], refuse(exc.status, str(exc)))
        state = await self.model.trial(kind, tag, bounds, stop)
        log.info("%s: %s", kind, tag or ("stopped" if stop else "state"))
        return state

    def _log(self, records: list[RecordIn], values: list[dict[str, Any]], out: list[PredictionOut],
             answers: list[dict[str, Any]], outputs: list[dict[str, float]]) -> None:
        if self.log is not None:  # the statistics and the lines: the log's writer thread's (predlog), not here
            now = time.time()
            self.log.put([Entry(now, r.id, o.model_version, a["checkpoint_sha256"], {}, o.label,
                                a.get("probabilities", []), a.get("embeddings", {}), n, inputs=v)
                          for r, v, o, a, n in zip(records, values, out, answers, outputs, strict=True)],
                         sum(held_bytes(v) for v in values))

    def metadata(self) -> dict[str, Any]:
        card = self.card
        return {
            "service": "mmops", "domain": self.pack.name, "model_version": self.version,
            "checkpoint_sha256": card.checkpoint_sha256, "dataset_version": card.dataset_version,
            "val_metrics": card.val_metrics, "classes": list(self.pack.classes),
            "runtime": self.complete.runtime.runtime if self.complete.runtime else "torch",
            "modalities": [m.model_dump(mode="json") for m in self.pack.modalities],
            "limits": {"max_records": MAX_RECORDS, "max_image_base64_chars": MAX_IMAGE_B64_CHARS},
            "auth": "bearer" if os.environ.get("MMOPS_API_TOKEN") else "none",
            "prediction_log": self.log.stats() if self.log is not None else None,
            "serving": {**self.model.stats(), "workers": WORKERS,
                        "worker": self.peers.index if self.peers else 1},
            "card": {"url": "/card", "non_commercial": self.complete.non_commercial,
                     "composed": self.complete.training_data.composed, "approval": self.complete.approval and
                     self.complete.approval.model_dump()},
        }


class _LiveSpec:
    """GET /docs.json answers the whole API of this service, for its domain: BentoML's spec of the class
    completed with the mounted routes, auth, the error shape, and this domain's inputs (mmops.serving.spec).
    BentoML's own answers only the API methods, with generic inputs."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        svc = LIVE.get("svc")
        if scope["type"] != "http" or scope.get("path") != "/docs.json" or svc is None:
            await self.app(scope, receive, send)
            return
        from starlette.responses import JSONResponse

        await JSONResponse(openapi(svc.pack))(scope, receive, send)


def openapi(pack: Any = None) -> dict[str, Any]:
    """This service's whole API (mmops.serving.spec): generic, or for `pack`'s domain exactly."""
    from mmops.serving.spec import build

    return build(_service.openapi_spec.asdict(), metadata, upload, pack)


# GET /metadata and POST /predict/upload beside BentoML's routes (a passive mount answers only its own
# paths); the middleware wraps every route, the first added outermost: bearer auth first (probes and
# /metrics stay open), then the body-size limit, then the API routes' body checks, and this domain's
# /docs.json.
_service: Any = Svc  # a bentoml Service once decorated
_service.mount_asgi_app(mounted(), path="/")
_service.add_asgi_middleware(BearerAuth)
_service.add_asgi_middleware(BodyLimit)
_service.add_asgi_middleware(RequestCheck)
_service.add_asgi_middleware(_LiveSpec)
