"""Stages that bring data in: a bundled pack landed, what is new in the landing area ingested (or planned
in batches), and the landing area's control files (labels, annotations, ground truth) read."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmops import audit
from mmops.catalog import session_scope
from mmops.config import Settings, get_settings
from mmops.context import artifacts
from mmops.errors import BadInputError, NotFoundError
from mmops.stages.common import Progress, jsonable, resolve, write_summary
from mmops.stages.results import Ingested, Planned


def pull_data(pack: str) -> dict[str, Any]:
    """Land a bundled real data pack into landing/<domain>/."""
    from mmops.datasets.packs import pull

    return jsonable(pull(pack, get_settings().landing_dir))


def pull_domain(domain: str) -> dict[str, Any]:
    """Land the pack that params.yaml assigns to this domain."""
    settings, params, _ = resolve(domain)
    if domain not in params.packs:
        raise NotFoundError(f"params.yaml does not list domain {domain!r} under packs (`mmops domain add {domain}`)")
    pack = params.packs[domain]
    if pack is not None:
        from mmops.datasets.packs import pack_for

        pack_for(domain, pack)  # it lands in landing/<its domain>/: that must be this one
        return pull_data(pack)
    # a domain of your own (its domain pack loaded above): its files are yours to land
    target = settings.landing_dir / domain
    target.mkdir(parents=True, exist_ok=True)
    files = sum(1 for p in target.rglob("*") if p.is_file())
    return {"pack": None, "domain": domain, "landing": str(target), "files": files,
            "note": f"no bundled pack: land the domain's files in {target}"}


def _session_factory(settings: Settings) -> Callable[[], Any]:
    from sqlalchemy.orm import sessionmaker

    from mmops.catalog import get_engine

    return sessionmaker(get_engine(settings.catalog_url), expire_on_commit=False)


def ingest(domain: str, progress: Progress = None, paths: list[str] | None = None) -> Ingested:
    """Ingest what is new in the domain's landing area (or exactly `paths`: one planned batch)."""
    from mmops.ingest import Landing
    from mmops.ingest.run import ingest_domain

    settings, params, pack = resolve(domain)
    summary = ingest_domain(
        _session_factory(settings), pack, Landing(settings.landing(domain)), settings.data_dir,
        settings.quarantine_dir, phi_key=settings.phi_key(), paths=paths, workers=params.ingest.workers or None,
        executor=params.ingest.executor,
        batch_files=params.ingest.batch_files, progress=progress,
    )
    name = "ingest.json" if paths is None else f"ingest-batch-{_digest(paths)}.json"
    result = jsonable(summary)
    if summary.ingested or summary.quarantined:
        with session_scope(settings.catalog_url) as session:
            audit.record(session, "ingested", domain, f"landing:{summary.ingested + summary.quarantined} files",
                         seen=summary.seen, ingested=summary.ingested, duplicates=summary.duplicates,
                         quarantined=summary.quarantined, new_records=summary.new_records)
    seconds = result.pop("seconds")  # wall times stay out of the file: it is a DVC output, kept deterministic
    return Ingested(**write_summary(artifacts(domain, settings) / name, result), seconds=seconds)


def _digest(items: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:12]


def plan_ingest(domain: str) -> Planned:
    """The new or changed landed files, in batches of params `ingest.batch_files` (paths only)."""
    from mmops.ingest import Landing
    from mmops.ingest.plan import plan_batches

    settings, params, pack = resolve(domain)
    with session_scope(settings.catalog_url) as session:
        batches = plan_batches(session, pack, Landing(settings.landing(domain)), params.ingest.batch_files)
    return Planned(domain=domain, batches=batches, files=sum(len(b) for b in batches))


def landed_file(settings: Settings, domain: str, name: str) -> Path | None:
    """A control file (labels, annotations) of the landing area as a local path (fetched if remote)."""
    from mmops.ingest import Landing
    from mmops.modalities import MAX_FILE_BYTES

    landing = Landing(settings.landing(domain))
    if landing.local is not None:
        path = landing.local / name
        if not path.exists() and not path.is_symlink():
            return None
        # a symlink (or a folder on the way) pointing out of the landing area is refused, as ingest refuses it
        problem = landing.stat(name).problem
        if problem:
            raise BadInputError(f"{landing.url}/{name}: {problem}")
        return path
    try:
        data = landing.read(name, 16 * MAX_FILE_BYTES)
    except FileNotFoundError:
        return None
    local = settings.var_dir / "fetched" / domain / name
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(data)
    return local


def landed_folder(settings: Settings, domain: str, folder: str, suffixes: tuple[str, ...]) -> list[str]:
    """Control files in a folder of the landing area (local or remote), as landing-relative names:
    `annotations/` (Label Studio exports), `ground_truth/` (labels that arrive after serving)."""
    from mmops.ingest import Landing

    landing = Landing(settings.landing(domain))
    if landing.local is not None:
        local = landing.local / folder
        found = [p.name for p in local.iterdir() if p.is_file()] if local.is_dir() else []
    else:
        found = [Path(p).name for p in landing.fs.glob(f"{landing.root}/{folder}/*")]
    return sorted(f"{folder}/{name}" for name in found if name.lower().endswith(suffixes))


def ground_truth_files(domain: str, settings: Settings | None = None) -> list[Path]:
    """The domain's ground-truth files (`sample_id,label` CSV or JSON, the ids the service logged), local."""
    settings = settings or get_settings()
    names = landed_folder(settings, domain, "ground_truth", (".csv", ".json"))
    return [p for p in (landed_file(settings, domain, n) for n in names) if p is not None]
