"""Domain packs: what a domain's records look like (modalities, classes). Data, not code: one YAML each.

Adding a domain means adding a YAML file here (or in MMOPS_HOME/domains/); no stage code changes.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from mmops.config import get_settings, safe_load
from mmops.errors import ConfigError, NotFoundError, one_line
from mmops.modalities import ModalitySpec, parse_spec
from mmops.modalities.base import NAME


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


# What a labels file's columns are commonly called; the first one a file has is used, unless the pack names
# its own (LabelColumns). An id may be a record key or a landed file's name or path.
ID_COLUMNS = ("sample_id", "id", "key", "record", "record_id", "file", "filename", "file_name", "path", "name")
LABEL_COLUMNS = ("label", "class", "target", "category", "y")
SPLIT_COLUMNS = ("split", "subset", "fold", "set", "partition")
# A data set's own split names -> ours
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "dev": "val", "test": "test", "testing": "test", "holdout": "test", "eval": "test"}


def split_name(given: str) -> str | None:
    """A data set's name for a split (`Training`, `dev`, `holdout`...) -> ours (train / val / test), or None."""
    return SPLIT_NAMES.get(given.strip().lower())


NON_COMMERCIAL = re.compile(r"\bNC\b|-NC\b|non-?commercial", re.I)


class Source(BaseModel):
    """Where a domain's data comes from, under which licence."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    license: str = Field(min_length=1)

    @property
    def non_commercial(self) -> bool:
        """CC BY-NC(-ND/-SA) and the like: a model trained on it may not be used commercially."""
        return bool(NON_COMMERCIAL.search(self.license))

    def line(self) -> str:
        return f"{self.name}: {self.license}" + (" (non-commercial use only)" if self.non_commercial else "")


class CardFacts(BaseModel):
    """What a model card says that the data cannot: who the model is for, where the data comes from, what it
    cannot do. Packaging refuses a model whose card leaves intended_users or sources empty (mmops.card)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    intended_users: str = ""
    sources: tuple[Source, ...] = ()
    composed: bool = False  # records assembled from separate sources: the card says the pairing is synthetic
    limitations: tuple[str, ...] = ()

    @property
    def non_commercial(self) -> bool:
        return any(s.non_commercial for s in self.sources)

    def licence_line(self) -> str:
        return "; ".join(s.line() for s in self.sources) or "(no sources declared)"


class LabelColumns(BaseModel):
    """The columns of the domain's labels files: None means the first of the common names the file has."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str | None = None
    label: str | None = None
    split: str | None = None  # optional: a data set's own train/val/test split, honoured by `mmops build`


class DomainPack(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=f"^{NAME}$")
    description: str
    classes: tuple[str, ...] = Field(min_length=2)
    # each modality's spec is its kind's (mmops.modalities): `kind: sensor`, `image`, `text` or a plug-in's
    modalities: tuple[SerializeAsAny[ModalitySpec], ...] = Field(min_length=1)
    task: str = "classification"  # what its model does with a record (mmops.tasks)
    task_options: dict[str, Any] = Field(default_factory=dict)  # the task kind's, checked by it (anomaly: normal_class)
    labels_file: str = "labels.csv"
    label_columns: LabelColumns = LabelColumns()
    # How a landed file's path (relative to landing/<domain>/) names its record and modality. Files with the
    # same key form one multimodal record; a record may lack modalities. A pack of one modality may leave
    # out (?P<modality>...): a flat folder, `^(?P<key>[^/]+)\.csv$`. An optional group (?P<split>...) reads
    # a data set's own split from the path (a folder per split: train/, val/, test/).
    record_pattern: str = r"^(?P<modality>[^/]+)/(?P<key>[^/]+)\.[^./]+$"
    label_rules: tuple[LabelRule, ...] = ()
    # this domain's training parameters over params.yaml `train` (e.g. more epochs for a harder data set);
    # the keys and values are checked as params.yaml's are
    train: dict[str, Any] = Field(default_factory=dict)
    card: CardFacts = CardFacts()  # the model card's users, sources and licences, limitations

    @field_validator("modalities", mode="before")
    @classmethod
    def _kinds(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        specs = []
        for i, raw in enumerate(value):
            try:
                specs.append(parse_spec(raw))
            except ValidationError as exc:  # say which modality, as a discriminated union would
                name = raw.get("name", i) if isinstance(raw, dict) else i
                raise ValueError(f"modality {name!r} ({raw.get('kind')}): {one_line(exc)}") from None
        return tuple(specs)

    @model_validator(mode="after")
    def _unique(self) -> DomainPack:
        try:
            groups = re.compile(self.record_pattern).groupindex
        except re.error as exc:
            raise ValueError(f"record_pattern is not a regular expression: {exc}") from None
        if "key" not in groups or ("modality" not in groups and len(self.modalities) > 1):
            raise ValueError("record_pattern needs the named groups (?P<key>...) and, with more than one modality, "
                             "(?P<modality>...)")
        for rule in self.label_rules:
            if rule.label not in self.classes:
                raise ValueError(f"label rule {rule.name}: {rule.label!r} is not a class of {self.name}")
            if rule.modality not in [m.name for m in self.modalities]:
                raise ValueError(f"label rule {rule.name}: no modality {rule.modality!r}")
        from mmops.tasks import task_kinds, task_of

        if self.task not in task_kinds():
            raise ValueError(f"unknown task {self.task!r}; choose from {task_kinds()}")
        task_of(self.task).check_pack(self)
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

    def modality(self, name: str) -> ModalitySpec:
        for m in self.modalities:
            if m.name == name:
                return m
        raise NotFoundError(f"domain {self.name} has no modality {name!r}; it has {self.modality_names}")

    @property
    def modality_names(self) -> list[str]:
        return [m.name for m in self.modalities]

    def route(self, match: re.Match[str]) -> tuple[str, str]:
        """(record key, modality) of a landed path that matched record_pattern; a pack of one modality may
        leave the modality out of its pattern (a flat folder of files)."""
        groups = match.groupdict()
        return str(groups["key"]), str(groups.get("modality") or self.modalities[0].name)


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
        pack = DomainPack.model_validate(safe_load(path.read_text(encoding="utf-8")))
    except (yaml.YAMLError, ValidationError, UnicodeDecodeError) as exc:
        raise ConfigError(f"domain pack {path}: {one_line(exc)}") from exc
    if pack.name != name:
        raise ConfigError(f"domain pack {path}: its name is {pack.name!r}; the file must be named {pack.name}.yaml")
    return pack
