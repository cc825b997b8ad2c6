"""The model card: what a trained model is, in one typed record beside its weights (model_card.json).

Training writes it, packaging, evaluation, monitoring and the service read it, each through `ModelCard`, so
a card is checked when it is written, when it is packaged and when it is served: a missing field, a domain
pack that no longer parses (a plug-in kind not installed), or classes that disagree with the pack are a
clear error at the first of those, never a KeyError in a request.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmops.domains import DomainPack
from mmops.errors import BadInputError, NotFoundError, one_line

CARD_FORMAT = "mmops-model-card/2"  # 2: encoders, fusion and preprocessing named in "arch"
CARD = "model_card.json"
SHA256 = r"^[0-9a-f]{64}$"
T = TypeVar("T", bound=BaseModel)


class ModelCard(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["mmops-model-card/2"] = "mmops-model-card/2"  # CARD_FORMAT
    mmops_version: str
    domain: str
    intended_use: str
    classes: list[str] = Field(min_length=2)
    domain_pack: dict[str, Any]  # the pack as trained on (DomainPack's JSON): the service reads its inputs
    input_spec: dict[str, dict[str, Any]]
    arch: dict[str, Any]  # what rebuilds the model (models.build_model)
    init: dict[str, str]  # per modality: random, a pretrained source, or file:<sha256> of given weights
    preprocessor: dict[str, Any]  # datasets.tensors.Preprocessor's JSON
    dataset_version: str = Field(min_length=1)
    dataset_split_counts: dict[str, int]
    params: dict[str, Any]
    params_hash: str
    checkpoint_sha256: str = Field(pattern=SHA256)
    best_epoch: int = Field(ge=1)
    world_size: int = Field(1, ge=1)
    val_metrics: dict[str, float | None]
    temperature: float = Field(1.0, gt=0)  # divides the logits: probabilities calibrated on validation (tasks/temperature.py)
    # per class, the isotonic map applied after T where it predicted held-out labels better (tasks/isotonic.py)
    isotonic: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...] | None = None
    val_alignment: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        pack = self.pack
        if pack.name != self.domain or list(pack.classes) != self.classes:
            raise ValueError(f"the card's domain and classes ({self.domain}, {self.classes}) are not its pack's "
                             f"({pack.name}, {list(pack.classes)})")
        return self

    @cached_property
    def pack(self) -> DomainPack:
        """The domain pack the model was trained on (its modalities are the model's inputs); parsed once, when
        the card is checked."""
        return DomainPack.model_validate(self.domain_pack)

    def write(self, model_dir: Path) -> Path:
        path = model_dir / CARD
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True), encoding="utf-8")
        return path


def read_card(model_dir: Path) -> ModelCard:
    """The card of the model in `model_dir`, checked; NotFoundError without one, BadInputError if unreadable."""
    return read_typed(model_dir / CARD, ModelCard, CARD_FORMAT, f"no trained model in {model_dir}; run `mmops train` "
                      "first", "retrain with `mmops train`")


def read_typed(path: Path, model: type[T], fmt: str, missing: str, remedy: str) -> T:
    """A card file of format `fmt` read as `model`: NotFoundError(missing) without one, BadInputError naming the
    file (and `remedy` for a format this mmops does not read) when it is unreadable or fails a check."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(missing) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path}: not a readable model card ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != fmt:
        found = raw.get("format") if isinstance(raw, dict) else None
        raise BadInputError(f"{path}: not a model card this mmops reads (format {found!r}, expected {fmt!r}); "
                            f"{remedy}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise BadInputError(f"{path}: {one_line(exc)}") from None
