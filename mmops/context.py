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

    def manifest(self) -> Manifest:
        return load_manifest(self.domain, self.settings)


def artifacts(domain: str, settings: Settings | None = None) -> Path:
    """The domain's folder of stage outputs (artifacts/<domain>)."""
    return (settings or get_settings()).artifacts_dir / domain


def manifest_path(domain: str, settings: Settings | None = None) -> Path:
    return artifacts(domain, settings) / "dataset" / "manifest.json"


def load_manifest(domain: str, settings: Settings | None = None) -> Manifest:
    """The domain's current dataset version (written by `build`)."""
    from mmops.datasets.build import Manifest

    path = manifest_path(domain, settings)
    if not path.exists():
        raise NotFoundError(f"no dataset for {domain} at {path}; run `mmops build --domain {domain}`")
    return Manifest.read(path)
