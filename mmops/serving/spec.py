"""The service's OpenAPI spec: BentoML generates the spec of its own routes (the API methods and the probes)
from the service class; this adds what BentoML does not see: the routes mounted beside them (`GET /metadata`,
`POST /predict/upload`), the bearer token, the 401/413/415 the middleware answers, the one error shape, and a
domain's exact inputs. The service answers it at /docs.json (mmops.serving.service.openapi); `make docs`
renders it to docs/openapi.json and docs/api.md (mmops.serving.apidoc).
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from mmops.modalities import kind_of
from mmops.serving.middleware import DEFAULT_MAX_BODY_BYTES, OPEN_PATHS

DESCRIPTION = """One service per domain (`mmops serve --domain D`, or the bento `mmops-D`) answers for that domain's
champion model. A record is any subset of the domain's modalities: images as base64 of their PNG/JPEG bytes,
sensors as rows (time x channels, in the domain's channel order), text as a string; `POST /predict/upload`
takes the files themselves. Every client mistake is a 4xx in one shape, `{"error": ..., "detail": ...}`,
bounded in size (of many problems, the first few and their count); what the service answered is logged
(without PHI) for drift monitoring. A running service answers this spec for its own domain at `/docs.json`,
with that domain's modalities as the exact inputs."""


ERROR_REF = {"$ref": "#/components/schemas/Error"}
# BentoML's API methods, each taking a JSON body
BODY_ROUTES = ("/predict", "/explain", "/admin/reload", "/admin/shadow", "/admin/canary")


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def _for_domain(spec: dict[str, Any], pack: Any) -> None:
    """The inputs of `pack`'s records and uploads, in place of the generic ones."""
    schemas = spec["components"]["schemas"]
    inputs = {m.name: kind_of(m).wire_schema(m) for m in pack.modalities}
    schemas["RecordIn"]["properties"]["inputs"] = {
        "type": "object", "title": "Inputs", "properties": inputs, "additionalProperties": False,
        "minProperties": 1, "description": f"any of {pack.name}'s modalities {pack.modality_names}"}
    schemas["UploadForm"] = {
        "type": "object", "title": "UploadForm", "additionalProperties": False,
        "description": f"One file per modality of {pack.name}, the field named after the modality; `id` optional.",
        "properties": {"id": {"type": "string", "maxLength": 200},
                       **{m: {"type": "string", "format": "binary"} for m in pack.modality_names}}}
    targets = ["", *([] if pack.task == "anomaly" else pack.classes)]  # a detector has no class to choose
    for schema in (schemas["explain__Input"],
                   spec["paths"]["/explain"]["post"]["requestBody"]["content"]["application/json"]["schema"]):
        schema["properties"]["target"]["enum"] = targets
    spec["info"]["title"] += f" ({pack.name})"


def _route_doc(handler: Any) -> str:
    """A mounted route's docstring, without the `METHOD /path: ` it starts with."""
    import re

    text = re.sub(r"^[A-Z]+ /\S+: ", "", inspect.cleandoc(handler.__doc__ or ""))
    return text[:1].upper() + text[1:]


def _card_path() -> dict[str, Any]:
    from mmops.serving.routes import CARD_FORMATS, card

    return {"get": {
        "tags": ["Service APIs"], "operationId": "mmops__card", "description": _route_doc(card),
        "parameters": [{"name": "format", "in": "query", "required": False,
                        "schema": {"type": "string", "enum": list(CARD_FORMATS), "default": "json"}}],
        "responses": {"200": {"description": "The model card", "content": {
            "application/json": {"schema": {"type": "object"}}, "text/markdown": {"schema": {"type": "string"}},
            "text/html": {"schema": {"type": "string"}}}},
            "400": _error("A format that is not one of json, markdown, html"),
            "503": _error("The service is still starting")}}}


def build(base: dict[str, Any], metadata: Any, upload: Any, pack: Any = None) -> dict[str, Any]:
    """The whole API: `base`, BentoML's spec of the service class, completed with the mounted routes (their
    handlers `metadata` and `upload` describe them), auth and the one error shape. With a domain pack, that
    domain's inputs exactly (a running service answers this at /docs.json); without, the generic spec of
    every domain (docs/openapi.json)."""
    from mmops import __version__
    from mmops.serving.schemas import EXPLAIN_QUEUE, ErrorOut

    spec = json.loads(json.dumps(base))  # a deep copy, status codes as str
    spec["info"] = {"title": "mmops prediction service", "version": __version__,
                    "description": DESCRIPTION}
    schemas = spec["components"]["schemas"]
    # one error shape, answered by the service itself (BentoML declares three names for it)
    for name in ("InvalidArgument", "NotFound", "InternalServerError"):
        schemas.pop(name, None)
    schemas["Error"] = {**ErrorOut.model_json_schema(), "title": "Error"}
    for name in ("predict__Input", "explain__Input", "reload__Input", "shadow__Input", "canary__Input"):
        # the service refuses unknown keys
        schemas[name]["additionalProperties"] = False
    for path in BODY_ROUTES:  # BentoML inlines them in the route too
        spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"][
            "additionalProperties"] = False
    for path in ("/predict", "/explain"):  # no body: no records
        spec["paths"][path]["post"]["requestBody"]["required"] = True
    schemas["RecordIn"]["properties"]["inputs"]["minProperties"] = 1
    spec["components"]["securitySchemes"] = {"bearer": {
        "type": "http", "scheme": "bearer",
        "description": "Required when the service runs with MMOPS_API_TOKEN set (several tokens, "
                       "whitespace-separated, during a rotation); the probes and /metrics stay open."}}
    spec["components"]["schemas"]["UploadForm"] = {
        "type": "object", "title": "UploadForm",
        "description": "One file per modality, the field named after the modality; `id` optional.",
        "properties": {"id": {"type": "string"}},
        "additionalProperties": {"type": "string", "format": "binary"}}
    paths = spec["paths"]
    paths["/metadata"] = {"get": {
        "tags": ["Service APIs"], "operationId": "mmops__metadata",
        "description": _route_doc(metadata),
        "responses": {"200": {"description": "The served model and the service's limits", "content": {
            "application/json": {"schema": {"type": "object"}}}}}}}
    paths["/card"] = _card_path()
    paths["/predict/upload"] = {"post": {
        "tags": ["Service APIs"], "operationId": "mmops__predict_upload",
        "description": _route_doc(upload),
        "requestBody": {"content": {"multipart/form-data": {"schema": {"$ref": "#/components/schemas/UploadForm"}}}},
        "responses": {"200": paths["/predict"]["post"]["responses"]["200"],
                      "400": _error("A file that does not decode or check, or an unknown field"),
                      "503": _error("The service is still starting")}}}
    for path in ("/admin/reload", "/admin/shadow", "/admin/canary"):
        paths[path]["post"]["responses"]["409"] = _error(
            "The model takes other inputs than the served one (deploy it with a rolling restart instead), or its "
            "model card is missing or incomplete")
    paths["/predict"]["post"]["responses"].pop("404", None)
    paths["/explain"]["post"]["responses"].pop("404", None)
    paths["/explain"]["post"]["responses"]["503"] = _error(
        f"Explanations queued to the limit ({EXPLAIN_QUEUE} records): retry after the Retry-After seconds")
    for path in BODY_ROUTES:
        paths[path]["post"]["responses"]["415"] = _error("The body is not application/json")
    for path, item in paths.items():
        for op in item.values():
            for status, resp in op["responses"].items():
                if status[0] in "45" and "content" in resp:
                    resp["content"] = {"application/json": {"schema": ERROR_REF}}
            if path in OPEN_PATHS:
                continue
            op["security"] = [{"bearer": []}]
            op["responses"]["401"] = _error("No bearer token, or not one of MMOPS_API_TOKEN's")
            if "requestBody" in op:
                op["responses"]["413"] = _error(
                    f"Body over MMOPS_MAX_BODY_BYTES (default {DEFAULT_MAX_BODY_BYTES // 2**20} MiB)")
    spec["paths"] = dict(sorted(paths.items(), key=lambda kv: (kv[0] in OPEN_PATHS, kv[0])))
    if pack is not None:
        _for_domain(spec, pack)
    return spec
