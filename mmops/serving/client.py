"""A small HTTP client for the prediction service, and request payloads built from landed records."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mmops.domains import DomainPack, ImageSpec, SensorSpec
from mmops.errors import MmopsError
from mmops.modalities import decode


def record_payload(pack: DomainPack, data_root: Path, row: dict[str, Any]) -> dict[str, Any]:
    """A manifest row -> the JSON a client sends: base64 images, sensor rows, text."""
    inputs: dict[str, Any] = {}
    for modality, ref in row["files"].items():
        data = (data_root / ref["blob"]).read_bytes()
        spec = pack.modality(modality)
        if isinstance(spec, ImageSpec):
            inputs[modality] = base64.b64encode(data).decode("ascii")
        elif isinstance(spec, SensorSpec):
            inputs[modality] = decode(data, spec).value.tolist()  # type: ignore[union-attr]
        else:
            inputs[modality] = data.decode("utf-8-sig")
    return {"id": row["key"], "inputs": inputs}


def predict(url: str, records: list[dict[str, Any]], timeout: float = 60.0) -> list[dict[str, Any]]:
    import httpx

    resp = httpx.post(f"{url.rstrip('/')}/predict", json={"records": records}, timeout=timeout)
    if resp.status_code != 200:
        raise MmopsError(f"service answered {resp.status_code}: {resp.text[:300]}")
    return resp.json()


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise MmopsError(f"the service exited with code {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url.rstrip('/')}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise MmopsError(f"the service at {url} was not ready within {timeout:.0f} s")


def service_env(domain: str) -> dict[str, str]:
    """The environment `bentoml serve` needs for a domain of this project (model store inside the project)."""
    import os

    from mmops.config import get_settings

    settings = get_settings()
    env = {**os.environ, "MMOPS_DOMAIN": domain, "MMOPS_HOME": str(settings.root),
           "BENTOML_HOME": os.environ.get("BENTOML_HOME", str(settings.bentoml_home)),
           "BENTOML_DO_NOT_TRACK": "true"}
    env.pop("MMOPS_MODEL_TAG", None)  # the domain's newest packaged model
    return env


def serve_command(port: int, host: str = "127.0.0.1") -> list[str]:
    return [sys.executable, "-m", "bentoml", "serve", "mmops.serving.service:Svc", "--host", host,
            "--port", str(port)]
