"""A domain of the test's own making run the way a user runs it: its pack in the project's domains/, every
stage up to packaging as an `mmops` process of its own, then a real `bentoml serve` of the packaged model.
The kind tests (a plug-in kind, audio, video) share it."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from mmops.processes import stop_group
from mmops.serving.client import serve_command, wait_ready
from tests.conftest import free_port, make_project, run_mmops

STAGES = ("ingest", "label", "validate", "build", "train", "evaluate", "package")


def project_with_pack(tmp_path: Path, pack: dict[str, Any], train: dict[str, Any] | None = None) -> Path:
    root = make_project(tmp_path / "proj", {pack["name"]: None}, train)
    (root / "domains").mkdir()
    (root / "domains" / f"{pack['name']}.yaml").write_text(yaml.safe_dump(pack, sort_keys=False))
    return root


def run_stages(root: Path, domain: str, stages: tuple[str, ...] = STAGES, **env: str) -> dict[str, Any]:
    """Each stage's `--json` result by stage name; a failing stage fails the test with its output."""
    results = {}
    for stage in stages:
        done = run_mmops(root, stage, "--domain", domain, "--json", **env)
        assert done.returncode == 0, f"{stage}: {done.stdout[-1500:]}{done.stderr[-1500:]}"
        results[stage] = json.loads(done.stdout)
    return results


def held_out_keys(build: dict[str, Any]) -> list[str]:
    """The records of the built dataset's test split."""
    return [r["key"] for r in json.loads(Path(build["manifest"]).read_text())["records"] if r["split"] == "test"]


@contextmanager
def served(root: Path, domain: str, model_tag: str, **env: str) -> Iterator[str]:
    """`bentoml serve` of the packaged model; yields its URL once it answers, stops it after."""
    port = free_port()
    environ = {**os.environ, "MMOPS_DOMAIN": domain, "MMOPS_HOME": str(root), "MMOPS_MODEL_TAG": model_tag, **env}
    environ.pop("MMOPS_API_TOKEN", None)
    with (root / "serve.log").open("wb") as log:
        proc = subprocess.Popen(serve_command(port), env=environ, cwd=root, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, proc, timeout=600, log=root / "serve.log")
            yield url
        finally:
            stop_group(proc)


def drift_after_shift(root: Path, url: str, domain: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Send the records as the field sends them after its kind's shift (`mmops.shifts`), then `mmops monitor`
    over the whole prediction log: its verdict."""
    import httpx

    from mmops.domains import DomainPack
    from mmops.shifts import shift_record

    pack = DomainPack.model_validate(yaml.safe_load((root / "domains" / f"{domain}.yaml").read_text()))
    shifted = [shift_record(pack, r) for r in records]
    answer = httpx.post(f"{url}/predict", json={"records": shifted}, timeout=300)
    assert answer.status_code == 200, answer.text
    done = run_mmops(root, "monitor", "--domain", domain, "--hours", "0", "--json")
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
    return dict(json.loads(done.stdout))
