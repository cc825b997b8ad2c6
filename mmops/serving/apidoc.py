"""The service's API as OpenAPI, and the page docs/api.md rendered from it.

BentoML generates the spec of its own routes (the API methods and the probes) from the service class; this
adds what BentoML does not see: the routes mounted beside them (`GET /metadata`, `POST /predict/upload`),
the bearer token, and the 401/413 the middleware answers. `make docs` (`python -m mmops.serving.apidoc`)
rewrites docs/openapi.json and docs/api.md; a test fails when they are not what the code generates.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

from mmops.serving.middleware import DEFAULT_MAX_BODY_BYTES, OPEN_PATHS
from mmops.serving.schemas import MAX_IMAGE_B64_CHARS, MAX_RECORDS

FLOAT32_MAX = 3.4028234663852886e38  # sensor values are float32 in the model

DESCRIPTION = """One service per domain (`mmops serve --domain D`, or the bento `mmops-D`) answers for that domain's
champion model. A record is any subset of the domain's modalities: images as base64 of their PNG/JPEG bytes,
sensors as rows (time x channels, in the domain's channel order), text as a string; `POST /predict/upload`
takes the files themselves. Every client mistake is a 4xx in one shape, `{"error": ..., "detail": ...}`,
bounded in size (of many problems, the first few and their count); what the service answered is logged
(without PHI) for drift monitoring. A running service answers this spec for its own domain at `/docs.json`,
with that domain's modalities as the exact inputs."""


ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def _modality_schema(spec: Any) -> dict[str, Any]:
    """What one modality's value is on the wire, as exactly as JSON Schema can say it (that an image's bytes
    decode, or what a sensor CSV holds, it cannot: those are 400s with a reason)."""
    from mmops.domains import ImageSpec, SensorSpec

    if isinstance(spec, ImageSpec):
        return {"type": "string", "format": "byte", "maxLength": MAX_IMAGE_B64_CHARS,
                "description": f"base64 of a PNG/JPEG/DICOM image (the model sees {spec.size[0]}x{spec.size[1]})"}
    if isinstance(spec, SensorSpec):
        n = len(spec.channels)
        return {"type": "array", "minItems": 2, "maxItems": spec.max_rows,
                "description": f"rows of {list(spec.channels)} at {spec.sample_rate_hz:g} Hz; the model reads "
                               f"{spec.length} (shorter: padded and masked)",
                "items": {"type": "array", "minItems": n, "maxItems": n, "items": {
                    "type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}}}
    return {"type": "string", "minLength": max(spec.min_chars, 1), "maxLength": spec.max_chars,
            "pattern": "^[^\\u0000]*\\S[^\\u0000]*$", "description": "UTF-8 text, not blank"}


def _for_domain(spec: dict[str, Any], pack: Any) -> None:
    """The inputs of `pack`'s records and uploads, in place of the generic ones."""
    schemas = spec["components"]["schemas"]
    inputs = {m.name: _modality_schema(m) for m in pack.modalities}
    schemas["RecordIn"]["properties"]["inputs"] = {
        "type": "object", "title": "Inputs", "properties": inputs, "additionalProperties": False,
        "minProperties": 1, "description": f"any of {pack.name}'s modalities {pack.modality_names}"}
    schemas["UploadForm"] = {
        "type": "object", "title": "UploadForm", "additionalProperties": False,
        "description": f"One file per modality of {pack.name}, the field named after the modality; `id` optional.",
        "properties": {"id": {"type": "string", "maxLength": 200},
                       **{m: {"type": "string", "format": "binary"} for m in pack.modality_names}}}
    spec["info"]["title"] += f" ({pack.name})"


def _route_doc(handler: Any) -> str:
    """A mounted route's docstring, without the `METHOD /path: ` it starts with."""
    import re

    text = re.sub(r"^[A-Z]+ /\S+: ", "", inspect.cleandoc(handler.__doc__ or ""))
    return text[:1].upper() + text[1:]


def openapi(pack: Any = None) -> dict[str, Any]:
    """The whole API: BentoML's spec of the service class, completed with the mounted routes, auth and the
    one error shape. With a domain pack, that domain's inputs exactly (a running service answers this at
    /docs.json); without, the generic spec of every domain (docs/openapi.json)."""
    from mmops import __version__
    from mmops.serving import service
    from mmops.serving.schemas import ErrorOut

    spec = json.loads(json.dumps(service._service.openapi_spec.asdict()))  # a deep copy, status codes as str
    spec["info"] = {"title": "mmops prediction service", "version": __version__,
                    "description": DESCRIPTION}
    schemas = spec["components"]["schemas"]
    # one error shape, answered by the service itself (BentoML declares three names for it)
    for name in ("InvalidArgument", "NotFound", "InternalServerError"):
        schemas.pop(name, None)
    schemas["Error"] = {**ErrorOut.model_json_schema(), "title": "Error"}
    for name in ("predict__Input", "reload__Input"):  # the service refuses keys it does not know
        schemas[name]["additionalProperties"] = False
    for path in ("/predict", "/admin/reload"):  # BentoML inlines them in the route too
        spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"][
            "additionalProperties"] = False
    spec["paths"]["/predict"]["post"]["requestBody"]["required"] = True  # no body: no records
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
        "description": _route_doc(service._metadata),
        "responses": {"200": {"description": "The served model and the service's limits", "content": {
            "application/json": {"schema": {"type": "object"}}}}}}}
    paths["/predict/upload"] = {"post": {
        "tags": ["Service APIs"], "operationId": "mmops__predict_upload",
        "description": _route_doc(service._upload),
        "requestBody": {"content": {"multipart/form-data": {"schema": {"$ref": "#/components/schemas/UploadForm"}}}},
        "responses": {"200": paths["/predict"]["post"]["responses"]["200"],
                      "400": _error("A file that does not decode or check, or an unknown field"),
                      "503": _error("The service is still starting")}}}
    paths["/admin/reload"]["post"]["responses"]["409"] = _error(
        "The model takes other inputs than the served one: deploy it with a rolling restart instead")
    paths["/predict"]["post"]["responses"].pop("404", None)
    for path in ("/predict", "/admin/reload"):
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


def _schema_text(schema: dict[str, Any], spec: dict[str, Any]) -> str:
    if "$ref" in schema:
        return f"`{schema['$ref'].rsplit('/', 1)[1]}`"
    if schema.get("type") == "array":
        return f"list of {_schema_text(schema.get('items', {}), spec)}"
    if "anyOf" in schema:
        return " or ".join(_schema_text(s, spec) for s in schema["anyOf"])
    if schema.get("type") == "object" and "additionalProperties" in schema and not schema.get("properties"):
        extra = schema["additionalProperties"]
        return f"object of {_schema_text(extra, spec) if isinstance(extra, dict) else 'any'}"
    return f"`{schema.get('type', 'any')}`" + (f" ({schema['format']})" if "format" in schema else "")


def _fields(schema: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    props = schema.get("properties", {})
    if not props:
        return []
    required = set(schema.get("required", []))
    rows = ["| field | type | required | notes |", "| --- | --- | --- | --- |"]
    for name, prop in props.items():
        notes = [f"default {json.dumps(prop['default'])}"] if "default" in prop else []
        for key, what in (("maxLength", "at most {} characters"), ("description", "{}")):
            if key in prop:
                notes.append(what.format(prop[key]).replace("\n", " "))
        rows.append(f"| `{name}` | {_schema_text(prop, spec)} | {'yes' if name in required else 'no'} | "
                    f"{'; '.join(notes)} |")
    return rows


def markdown(spec: dict[str, Any]) -> str:
    """docs/api.md: every route with its auth, request, answers; then the schemas they name."""
    lines = [
        "# The prediction service's API",
        "",
        "Generated by `make docs` (`python -m mmops.serving.apidoc`) from the service's OpenAPI spec, which "
        "is in [openapi.json](openapi.json) (BentoML's spec of the service class, completed with the routes "
        "mounted beside it and the bearer token); a running service also serves BentoML's part at "
        "`/docs.json` and a browsable page at `/`. Do not edit by hand.",
        "",
        inspect.cleandoc(spec["info"]["description"]),
        "",
        f"Limits: at most {MAX_RECORDS} records per request, {MAX_IMAGE_B64_CHARS // 2**20} Mi characters of "
        f"base64 per image, {DEFAULT_MAX_BODY_BYTES // 2**20} MiB per body (MMOPS_MAX_BODY_BYTES). What a "
        "domain's records hold (modalities, channels, lengths, classes) is in `GET /metadata` of its service.",
        "",
        "For example, a record of a sensor domain with one channel (docs/adding-a-domain.md), and the shape of "
        "the answer (`mmops predict` does this from files):",
        "",
        "```bash",
        "curl -s http://127.0.0.1:3000/predict -H 'Content-Type: application/json' \\",
        "  -H \"Authorization: Bearer $MMOPS_API_TOKEN\" \\",
        "  -d '{\"records\": [{\"id\": \"r1\", \"inputs\": {\"current\": [[0.12], [0.56], [0.91]]}}]}'",
        "```",
        "",
        "```json",
        '[{"id": "r1", "label": "<class>", "probabilities": {"<class>": 0.81, "<another class>": 0.02, "...": 0}, '
        '"model_version": "mmops-appliances:<tag>", "missing_modalities": [], '
        '"warnings": ["current: 3 samples, the model reads 200 (zero-padded and masked)"]}]',
        "```",
        "",
        "| method | path | auth | what |",
        "| --- | --- | --- | --- |",
    ]
    ops = [(path, method, op) for path, item in spec["paths"].items() for method, op in item.items()]
    for path, method, op in ops:
        first = inspect.cleandoc(op.get("description") or "").split("\n\n")[0].replace("\n", " ")
        first = first.split(". ")[0].rstrip(".").replace("<code>", "`").replace("</code>", "`")
        lines.append(f"| {method.upper()} | `{path}` | {'bearer' if op.get('security') else 'open'} | {first} |")
    for path, method, op in ops:
        if path in OPEN_PATHS:
            continue
        lines += ["", f"## {method.upper()} {path}", "", inspect.cleandoc(op.get("description") or "")]
        for ctype, body in op.get("requestBody", {}).get("content", {}).items():
            schema = body["schema"]
            lines += ["", f"Request body (`{ctype}`): {_schema_text(schema, spec) if '$ref' in schema else ''}"]
            lines += ["", *_fields(schema, spec)] if "properties" in schema else []
        lines += ["", "| status | meaning | body |", "| --- | --- | --- |"]
        for status, resp in op["responses"].items():
            body = resp.get("content", {}).get("application/json", {}).get("schema")
            lines.append(f"| {status} | {resp['description']} | {_schema_text(body, spec) if body else ''} |")
    lines += ["", "## Schemas"]
    for name, schema in spec["components"]["schemas"].items():
        if name.endswith("__Input") or name == "TaskStatusResponse":
            continue  # request wrappers, shown with their route; task status is not used by this service
        lines += ["", f"### {name}", ""]
        if schema.get("description"):
            lines += [inspect.cleandoc(schema["description"]).replace("\n", " "), ""]
        lines += _fields(schema, spec) or [f"{_schema_text(schema, spec)}"]
    lines += ["", "## Probes", "", "Open (no token): `/healthz` and `/livez` (the process is up), `/readyz` (a "
              "model is loaded and answering), `/metrics` (Prometheus, with BentoML's request metrics)."]
    return "\n".join(lines) + "\n"


def write(docs: Path) -> list[Path]:
    spec = openapi()
    out = [docs / "openapi.json", docs / "api.md"]
    out[0].write_text(json.dumps(spec, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    out[1].write_text(markdown(spec), encoding="utf-8")
    return out


if __name__ == "__main__":
    for path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs")):
        print(f"wrote {path}")
