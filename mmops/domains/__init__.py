"""Domain packs: what a domain's records look like (modalities, classes). Data, not code: one YAML each.

Adding a domain means adding a YAML file here (or in MMOPS_HOME/domains/); no stage code changes.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmops.config import get_settings
from mmops.errors import ConfigError, NotFoundError


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")


class ImageSpec(_Spec):
    kind: Literal["image"] = "image"
    size: tuple[int, int] = (32, 32)  # (height, width) the model sees
    channels: Literal[1, 3] = 3
    max_pixels: int = 4096 * 4096  # decompression-bomb guard
    extensions: tuple[str, ...] = (".png", ".jpg", ".jpeg")


class SensorSpec(_Spec):
    kind: Literal["sensor"] = "sensor"
    channels: tuple[str, ...]
    length: int = Field(ge=2)  # samples the model sees (series are cropped / zero-padded)
    sample_rate_hz: float = Field(gt=0)
    max_rows: int = 1_000_000
    extensions: tuple[str, ...] = (".csv",)


class TextSpec(_Spec):
    kind: Literal["text"] = "text"
    max_chars: int = 20_000
    max_tokens: int = 128
    vocab_buckets: int = 8192
    extensions: tuple[str, ...] = (".txt",)


ModalitySpec = Annotated[ImageSpec | SensorSpec | TextSpec, Field(discriminator="kind")]


class DomainPack(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str
    classes: tuple[str, ...] = Field(min_length=2)
    modalities: tuple[ModalitySpec, ...] = Field(min_length=1)
    labels_file: str = "labels.csv"

    @model_validator(mode="after")
    def _unique(self) -> DomainPack:
        names = [m.name for m in self.modalities]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate modality names in domain {self.name}: {names}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"duplicate classes in domain {self.name}")
        return self

    def modality(self, name: str) -> ImageSpec | SensorSpec | TextSpec:
        for m in self.modalities:
            if m.name == name:
                return m
        raise NotFoundError(f"domain {self.name} has no modality {name!r}; it has {self.modality_names}")

    @property
    def modality_names(self) -> list[str]:
        return [m.name for m in self.modalities]


def _candidate_files(name: str) -> list[Path]:
    user = get_settings().root / "domains" / f"{name}.yaml"
    return [user, Path(str(resources.files("mmops.domains") / f"{name}.yaml"))]


def load_domain(name: str) -> DomainPack:
    for path in _candidate_files(name):
        if path.is_file():
            try:
                return DomainPack.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
            except (yaml.YAMLError, ValidationError) as exc:
                raise ConfigError(f"domain pack {path}: {exc}") from exc
    raise NotFoundError(f"unknown domain {name!r} (no domains/{name}.yaml)")
