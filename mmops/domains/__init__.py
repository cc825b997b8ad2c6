"""Domain packs: what a domain's records look like (modalities, classes). Data, not code: one YAML each.

Adding a domain means adding a YAML file here (or in MMOPS_HOME/domains/); no stage code changes.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmops.config import get_settings
from mmops.errors import ConfigError, NotFoundError, one_line

NAME = r"[a-z][a-z0-9_]*"  # domains, modalities and rules: lowercase letters, digits and _


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(pattern=f"^{NAME}$")
    required: bool = False  # every record must have it (the validation gate checks)


class ImageSpec(_Spec):
    kind: Literal["image"] = "image"
    size: tuple[int, int] = (32, 32)  # (height, width) the model sees
    channels: Literal[1, 3] = 3
    max_pixels: int = 4096 * 4096  # decompression-bomb guard (the header is checked before decoding)
    min_side: int = Field(8, ge=1)  # smaller images are rejected, not upscaled into noise
    # DICOM images without a window in their tags use this one (center, width), in rescaled units (e.g. HU)
    window: tuple[float, float] | None = None
    extensions: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".dcm")


class SensorSpec(_Spec):
    kind: Literal["sensor"] = "sensor"
    channels: tuple[str, ...]
    length: int = Field(ge=2)  # samples the model sees (series are cropped / zero-padded)
    sample_rate_hz: float = Field(gt=0)
    rate_tolerance: float = Field(0.05, ge=0, lt=1)  # relative deviation of the median timestamp step
    value_range: tuple[float, float] | None = None  # physically possible values (the gate checks min/max)
    unit: str | None = None  # physical unit of the values (DICOM waveforms are converted to it)
    # what the model sees before standardisation: the values, or sign(x) * log1p(|x|) for signals whose
    # amplitudes span orders of magnitude (currents, counts), where a lamp and a heater differ 100-fold
    scale: Literal["linear", "symlog"] = "linear"
    # DICOM waveforms: channel -> lead/source name (CodeMeaning); they are resampled to sample_rate_hz
    dicom_channels: dict[str, str] = Field(default_factory=dict)
    max_rows: int = 1_000_000
    extensions: tuple[str, ...] = (".csv", ".parquet", ".dcm")


class TextSpec(_Spec):
    kind: Literal["text"] = "text"
    min_chars: int = Field(1, ge=1)
    max_chars: int = 20_000
    encodings: tuple[str, ...] = ("utf-8",)  # also accepted: "utf-16" (with a BOM); anything else is rejected
    redact_phi: bool = False  # replace names, dates, record numbers, phones, emails before storing
    max_tokens: int = 128
    vocab_buckets: int = 8192
    extensions: tuple[str, ...] = (".txt",)


class LabelRule(BaseModel):
    """A labeling function: votes `label` for a record when it fires, abstains otherwise.

    kind `keywords`: the modality's text contains any of `keywords` (whole words, case-insensitive).
    kind `threshold`: the modality's summary statistic `stat` (see the files' stats) is above `above` and/or
    below `below`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(pattern=f"^{NAME}$")
    kind: Literal["keywords", "threshold"]
    modality: str
    label: str
    weight: float = Field(1.0, gt=0)
    keywords: tuple[str, ...] = ()
    stat: str | None = None
    above: float | None = None
    below: float | None = None

    @model_validator(mode="after")
    def _complete(self) -> LabelRule:
        if self.kind == "keywords" and not self.keywords:
            raise ValueError(f"label rule {self.name}: kind keywords needs keywords")
        if self.kind == "threshold" and (self.stat is None or (self.above is None and self.below is None)):
            raise ValueError(f"label rule {self.name}: kind threshold needs stat and above and/or below")
        return self


ModalitySpec = Annotated[ImageSpec | SensorSpec | TextSpec, Field(discriminator="kind")]


class DomainPack(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=f"^{NAME}$")
    description: str
    classes: tuple[str, ...] = Field(min_length=2)
    modalities: tuple[ModalitySpec, ...] = Field(min_length=1)
    labels_file: str = "labels.csv"
    # How a landed file's path (relative to landing/<domain>/) names its record and modality. Files with the
    # same key form one multimodal record; a record may lack modalities.
    record_pattern: str = r"^(?P<modality>[^/]+)/(?P<key>[^/]+)\.[^./]+$"
    label_rules: tuple[LabelRule, ...] = ()
    # this domain's training parameters over params.yaml `train` (e.g. more epochs for a harder data set);
    # the keys and values are checked as params.yaml's are
    train: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique(self) -> DomainPack:
        try:
            groups = re.compile(self.record_pattern).groupindex
        except re.error as exc:
            raise ValueError(f"record_pattern is not a regular expression: {exc}") from None
        if not {"key", "modality"} <= set(groups):
            raise ValueError("record_pattern needs the named groups (?P<key>...) and (?P<modality>...)")
        for rule in self.label_rules:
            if rule.label not in self.classes:
                raise ValueError(f"label rule {rule.name}: {rule.label!r} is not a class of {self.name}")
            if rule.modality not in [m.name for m in self.modalities]:
                raise ValueError(f"label rule {rule.name}: no modality {rule.modality!r}")
        if self.train:
            from mmops.config import TrainParams

            try:
                TrainParams.model_validate(self.train)
            except ValidationError as exc:
                raise ValueError(f"train: {one_line(exc)}") from None
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


def _folders() -> list[Path]:
    """Where domain packs are found, first match wins: the project's domains/, then the bundled ones."""
    return [get_settings().root / "domains", Path(str(resources.files("mmops.domains")))]


def domain_file(name: str) -> Path:
    """The YAML file domain `name` loads from: the project's domains/<name>.yaml, else the bundled one."""
    if not re.fullmatch(NAME, name):
        raise NotFoundError(f"unknown domain {name!r} (domain names are lowercase letters, digits and _)")
    for path in (folder / f"{name}.yaml" for folder in _folders()):
        if path.is_file():
            return path
    raise NotFoundError(f"unknown domain {name!r} (no domains/{name}.yaml)")


def available_domains() -> dict[str, Path]:
    """Every domain pack there is (name -> file): the bundled ones, and the project's domains/*.yaml, which
    take precedence over a bundled pack of the same name."""
    found: dict[str, Path] = {}
    for folder in reversed(_folders()):  # the earlier folder wins
        found |= {p.stem: p for p in folder.glob("*.yaml")}
    return {name: path for name, path in sorted(found.items()) if re.fullmatch(NAME, name)}


def load_domain(name: str) -> DomainPack:
    path = domain_file(name)
    try:
        pack = DomainPack.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (yaml.YAMLError, ValidationError, UnicodeDecodeError) as exc:
        raise ConfigError(f"domain pack {path}: {one_line(exc)}") from exc
    if pack.name != name:
        raise ConfigError(f"domain pack {path}: its name is {pack.name!r}; the file must be named {pack.name}.yaml")
    return pack
