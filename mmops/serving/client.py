"""A small HTTP client for the prediction service, and request payloads built from landed records."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmops.blobs import read_blob
from mmops.domains import DomainPack
from mmops.errors import MmopsError
from mmops.serving import LOAD_FAILED
from mmops.serving.schemas import file_to_wire


def record_payload(pack: DomainPack, data_root: Path, row: Mapping[str, Any]) -> dict[str, Any]:
    """A manifest row -> the JSON a client sends: base64 images, sensor rows, text."""
    inputs = {m: file_to_wire(pack.modality(m), read_blob(data_root, ref["blob"]))
              for m, ref in row["files"].items()}
    return {"id": row["key"], "inputs": inputs}


def auth_headers(token: str | None = None) -> dict[str, str]:
    """The bearer header for `token` (default: MMOPS_API_TOKEN, when set; of several, the first: the new one
    during a rotation)."""
    import os

    token = os.environ.get("MMOPS_API_TOKEN") if token is None else token
    first = (token or "").split()
    return {"Authorization": f"Bearer {first[0]}"} if first else {}


def predict(url: str, records: list[dict[str, Any]], timeout: float = 60.0, batch: int = 64,
            ) -> list[dict[str, Any]]:
    """POST records to /predict, `batch` per request; the answers in order."""
    import httpx

    answers: list[dict[str, Any]] = []
    for i in range(0, len(records), batch):
        try:
            resp = httpx.post(f"{url.rstrip('/')}/predict", json={"records": records[i : i + batch]},
                              headers=auth_headers(), timeout=timeout)
        except httpx.TransportError as exc:
            raise MmopsError(f"cannot reach the service at {url}: {exc}") from None
        if resp.status_code != 200:
            raise MmopsError(f"service answered {resp.status_code}: {resp.text[:300]}")
        answers += resp.json()
    return answers


def metadata(url: str, timeout: float = 10.0) -> dict[str, Any]:
    import httpx

    try:
        resp = httpx.get(f"{url.rstrip('/')}/metadata", headers=auth_headers(), timeout=timeout)
    except httpx.TransportError as exc:
        raise MmopsError(f"cannot reach the service at {url}: {exc}") from None
    if resp.status_code != 200:
        raise MmopsError(f"service answered {resp.status_code}: {resp.text[:300]}")
    return resp.json()


def wait_logged(url: str, n: int, timeout: float = 30.0) -> dict[str, int]:
    """Wait until the service's prediction log holds at least n lines and nothing is pending (the log is
    written off the request path, so a response can come back before its line is on disk)."""
    deadline = time.monotonic() + timeout
    while True:
        stats: dict[str, int] | None = metadata(url)["prediction_log"]
        if stats is None:  # the service runs without a prediction log
            return {}
        if (stats["written"] + stats["dropped"] + stats["failed"] >= n and not stats["pending"]) \
                or time.monotonic() > deadline:
            return stats
        time.sleep(0.1)


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 120.0, path: str = "/readyz",
               name: str = "the service", log: Path | None = None) -> None:
    """Until `url + path` answers 200; MmopsError if `proc` ends first, if its `log` says the model could not
    be loaded (BentoML would restart the worker until the timeout), or if time runs out."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise MmopsError(f"{name} exited with code {proc.returncode} before it was ready")
        failed = _load_failure(log)
        if failed:
            raise MmopsError(f"{name} cannot start: {failed}")
        try:
            if httpx.get(f"{url.rstrip('/')}{path}", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise MmopsError(f"{name} at {url} was not ready within {timeout:.0f} s")


def _load_failure(log: Path | None) -> str | None:
    """The service log's first model-load failure line, from LOAD_FAILED on (None: none yet, or no log)."""
    if log is None or not log.is_file():
        return None
    text = log.read_text(encoding="utf-8", errors="replace")
    at = text.find(LOAD_FAILED)
    return text[at:].splitlines()[0] if at >= 0 else None


def service_env(domain: str) -> dict[str, str]:
    """The environment `bentoml serve` needs for a domain of this project (model store inside the project),
    serving the registry's champion."""
    import os

    from mmops.config import get_settings

    settings = get_settings()
    env = {**os.environ, "MMOPS_DOMAIN": domain, "MMOPS_HOME": str(settings.root),
           "BENTOML_HOME": os.environ.get("BENTOML_HOME", str(settings.bentoml_home)),
           "BENTOML_DO_NOT_TRACK": "true"}
    env.pop("MMOPS_MODEL_TAG", None)
    tag = _champion_tag(settings.catalog_url, domain)
    if tag:  # the registry's champion; without one packaged, the domain's newest packaged model
        env["MMOPS_MODEL_TAG"] = tag
    return env


def _champion_tag(catalog_url: str, domain: str) -> str | None:
    import logging

    from mmops.registry import champion_model_tag

    try:
        tag = champion_model_tag(catalog_url, domain)
        if tag:
            import bentoml

            bentoml.models.get(tag)
        return tag
    except Exception as exc:  # no catalog yet, or the store lost the model: serve the newest, and say so
        logging.getLogger(__name__).warning("champion of %s not servable (%s); serving the newest packaged model",
                                            domain, exc)
        return None


# Idle keep-alive connections are closed after this long. uvicorn's default (5 s) races clients that reuse a
# pooled connection just as the server closes it: measured at 64 concurrent clients, 6 of 2,560 requests died
# with a connection reset (httpx ReadError), none at 75 s. Longer than the 60 s idle timeout of common load
# balancers, so that they, not the service, close idle connections.
KEEP_ALIVE_S = 75


def serve_command(port: int, host: str = "127.0.0.1") -> list[str]:
    return [sys.executable, "-m", "bentoml", "serve", "mmops.serving.service:Svc", "--host", host,
            "--port", str(port), "--timeout-keep-alive", str(KEEP_ALIVE_S)]


def records_from_paths(pack: DomainPack, inputs: list[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """What `mmops predict` sends: `MODALITY=FILE` arguments form one record; a folder laid out like
    landing/<domain>/ gives one record per key (the domain's record_pattern), and its labels file, when it
    has one, the expected labels (key -> label). Files are decoded and checked as ingest checks landed
    files; a bad one is a BadInputError that names it."""
    import re

    from mmops.errors import BadInputError
    from mmops.labeling.files import read_label_file
    from mmops.modalities import MAX_FILE_BYTES

    def wire(modality: str, path: Path) -> Any:
        spec = pack.modality(modality)
        if not path.is_file():
            raise BadInputError(f"{path}: no such file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise BadInputError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        try:
            return file_to_wire(spec, path.read_bytes())
        except MmopsError as exc:
            raise BadInputError(f"{path}: {exc}") from None

    single = {}
    records: dict[str, dict[str, Any]] = {}
    expected: dict[str, str] = {}
    pattern = re.compile(pack.record_pattern)
    for arg in inputs:
        modality, sep, file = arg.partition("=")
        if sep and modality in pack.modality_names:
            single[modality] = wire(modality, Path(file))
            continue
        folder = Path(arg)
        if not folder.is_dir():
            raise BadInputError(f"{arg}: neither MODALITY=FILE (modalities: {pack.modality_names}) nor a folder")
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = path.relative_to(folder).as_posix()
            if rel == pack.labels_file:  # read as `mmops label` reads it (CSV or JSON, size-bounded)
                expected |= {r["sample_id"]: r["label"] for r in read_label_file(path)
                             if r.get("sample_id") and r.get("label")}
                continue
            m = pattern.fullmatch(rel)
            if m is None:
                continue  # not a record file of this domain (a README)
            key, modality = pack.route(m)
            if modality not in pack.modality_names:
                continue  # a modality the model does not know
            records.setdefault(key, {"id": key, "inputs": {}})["inputs"][modality] = wire(modality, path)
    out = ([{"id": None, "inputs": single}] if single else []) + list(records.values())
    if not out:
        raise BadInputError(f"no record files of domain {pack.name} in {inputs}")
    return out, expected
