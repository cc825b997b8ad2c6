"""What a stage works in, resolved once per call of a face (a CLI command, an Airflow task, a torchrun worker):
the settings, the domain's pack, the params as that pack overrides them, and the project's paths for the
domain. Stages take a Context instead of rebuilding these from a bare domain string.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mmops.config import Params, Settings, get_settings, load_params
from mmops.domains import DomainPack, load_domain
from mmops.errors import NotFoundError

if TYPE_CHECKING:
    from mmops.datasets.build import Manifest


@dataclass(frozen=True)
class Context:
    settings: Settings
    params: Params
    pack: DomainPack

    @classmethod
    def resolve(cls, domain: str, settings: Settings | None = None) -> Context:
        settings = settings or get_settings()
        pack = load_domain(domain)
        return cls(settings, load_params(settings.params_path).for_domain(pack.train), pack)

    @property
    def domain(self) -> str:
        return self.pack.name

    @property
    def artifacts(self) -> Path:
        return artifacts(self.domain, self.settings)

    @property
    def manifest_path(self) -> Path:
        return manifest_path(self.domain, self.settings)

    def manifest(self, version: str | None = None) -> Manifest:
        return load_manifest(self.domain, self.settings, version)


def artifacts(domain: str, settings: Settings | None = None) -> Path:
    """The domain's folder of stage outputs (artifacts/<domain>)."""
    return (settings or get_settings()).artifacts_dir / domain


def manifest_path(domain: str, settings: Settings | None = None) -> Path:
    return artifacts(domain, settings) / "dataset" / "manifest.json"


def version_manifest_path(domain: str, version: str, settings: Settings | None = None) -> Path:
    """Where build keeps each dataset version's manifest by its id (never overwritten: the id is its content's
    hash), so that a stage handed an id reads that version whatever was built since."""
    return artifacts(domain, settings) / "dataset_versions" / f"{version}.json"


def load_manifest(domain: str, settings: Settings | None = None, version: str | None = None) -> Manifest:
    """A dataset version of the domain: the one named (its id, as build returned it), else the current one
    (the latest build, artifacts/<domain>/dataset/manifest.json)."""
    from mmops.datasets.build import Manifest

    path = manifest_path(domain, settings)
    if version is not None:
        kept = version_manifest_path(domain, version, settings)
        if kept.exists():
            return Manifest.read(kept)
        if path.exists() and (current := Manifest.read(path)).id == version:
            return current
        raise NotFoundError(f"no manifest of dataset version {version!r} of {domain} here (neither in "
                            f"{kept.parent} nor current); `dvc pull` or rebuild it")
    if not path.exists():
        raise NotFoundError(f"no dataset for {domain} at {path}; run `mmops build --domain {domain}`")
    return Manifest.read(path)
