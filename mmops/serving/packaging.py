"""Packaging: a trained model into the BentoML model store (with its model cards), and a bento built from
bentofile.yaml that carries that model."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import yaml

from mmops.card import CARD, read_card
from mmops.card.complete import CompleteCard
from mmops.card.render import write_card
from mmops.errors import BadInputError, ConfigError
from mmops.inference import WEIGHTS
from mmops.monitoring import SKETCH

log = logging.getLogger(__name__)


def save_to_model_store(domain: str, model_dir: Path, extra_metadata: dict[str, Any],
                        complete: CompleteCard, runtime_dir: Path | None = None) -> str:
    """Save once per checkpoint hash and runtime, with its complete model card (card.json, .md, .html:
    rewritten in place when only the card changed, e.g. a challenger promoted by hand since); runtime_dir: the
    files of a runtime other than eager torch (mmops/runtimes), shipped beside the weights. Returns the model
    tag (`mmops-<domain>:<version>`)."""
    import bentoml

    card = read_card(model_dir)
    if card.domain != domain:
        raise BadInputError(f"{model_dir} holds a {card.domain} model, not {domain}")
    sha = card.checkpoint_sha256
    if complete.checkpoint_sha256 != sha:
        raise BadInputError(f"the model card describes checkpoint {complete.checkpoint_sha256[:12]}, not the model "
                            f"in {model_dir} ({sha[:12]}); run `mmops evaluate --domain {domain}`")
    try:
        stored = bentoml.models.list(f"mmops-{domain}")
    except bentoml.exceptions.NotFound:
        stored = []
    runtime = complete.runtime.runtime if complete.runtime else "torch"
    for existing in stored:
        meta = existing.info.metadata
        if meta.get("checkpoint_sha256") == sha and meta.get("runtime", "torch") == runtime:
            write_card(complete, Path(existing.path))
            return str(existing.tag)
    metadata = {"checkpoint_sha256": sha, "dataset_version": card.dataset_version,
                "classes": card.classes, "runtime": runtime, **extra_metadata}
    with bentoml.models.create(f"mmops-{domain}", labels={"domain": domain, "owner": "mmops"},
                               metadata=metadata) as model:
        for name in (WEIGHTS, CARD):
            shutil.copy2(model_dir / name, Path(model.path) / name)
        for extra in sorted(runtime_dir.iterdir()) if runtime_dir else []:
            shutil.copy2(extra, Path(model.path) / extra.name)
        write_card(complete, Path(model.path))
        sketch = model_dir.parent / SKETCH  # written by evaluate, for this checkpoint
        if sketch.exists() and json.loads(sketch.read_text(encoding="utf-8")).get("meta", {}).get(
                "checkpoint_sha256") == sha:
            shutil.copy2(sketch, Path(model.path) / SKETCH)
        else:
            log.warning("no reference sketch of %s next to it: the packaged model ships without one", model_dir)
    log.info("saved %s to the BentoML model store", model.tag)
    return str(model.tag)


def build_bento(domain: str, model_tag: str, bentofile: Path, build_ctx: Path) -> str:
    """Build `mmops-<domain>` from bentofile.yaml, with the domain's model and env baked in."""
    import bentoml
    from bentoml._internal.bento.build_config import BentoEnvSchema

    try:
        cfg = yaml.safe_load(bentofile.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {bentofile}: {exc}") from exc
    # bentoml.bentos.build wants env objects, not the dicts a bentofile holds
    envs = [BentoEnvSchema(name="MMOPS_DOMAIN", value=domain), BentoEnvSchema(name="MMOPS_MODEL_TAG", value=model_tag),
            *(BentoEnvSchema(**e) for e in cfg.get("envs", []))]
    bento = bentoml.bentos.build(
        service=cfg["service"], name=f"mmops-{domain}", labels={**cfg.get("labels", {}), "domain": domain},
        description=cfg.get("description"), include=cfg.get("include"), exclude=cfg.get("exclude"),
        python=cfg.get("python"), envs=envs, models=[model_tag], build_ctx=str(build_ctx),
    )
    log.info("built bento %s", bento.tag)
    return str(bento.tag)
