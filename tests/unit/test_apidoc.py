"""docs/api.md and docs/openapi.json are what the code generates (`make docs`), and say what a client needs."""

import json
from pathlib import Path

from mmops.serving.apidoc import markdown, openapi
from tests.conftest import REPO


def test_the_committed_api_docs_are_current(tmp_path: Path) -> None:
    spec = openapi()
    assert json.loads((REPO / "docs" / "openapi.json").read_text()) == spec, "run `make docs`"
    assert (REPO / "docs" / "api.md").read_text() == markdown(spec), "run `make docs`"


def test_the_spec_covers_every_route_with_its_auth() -> None:
    spec = openapi()
    paths = spec["paths"]
    assert {"/predict", "/predict/upload", "/metadata", "/admin/reload"} <= set(paths)  # mounted routes too
    for path in ("/healthz", "/livez", "/readyz", "/metrics"):
        assert "security" not in paths[path]["get"], path  # probes stay open
    predict = paths["/predict"]["post"]
    assert predict["security"] == [{"bearer": []}] and {"200", "400", "401", "413"} <= set(predict["responses"])
    assert predict["description"]  # the API method's docstring
    body = predict["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["records"]["items"]["$ref"] == "#/components/schemas/RecordIn"
    record = spec["components"]["schemas"]["RecordIn"]
    assert record["required"] == ["inputs"] and record["additionalProperties"] is False
    assert "multipart/form-data" in paths["/predict/upload"]["post"]["requestBody"]["content"]
    assert "409" in paths["/admin/reload"]["post"]["responses"]
    text = markdown(spec)
    for path in paths:
        assert f"`{path}`" in text, path
