"""What goes wrong in the field, applied to a domain's request payloads: the drift demo sends these, and
tests check that monitoring notices them. Each modality's kind says what its shift is (`ModalityKind.shift`):

- sensors: a miscalibrated or replaced sensor (gain and offset on every channel);
- images: a darker site and a defocused lens (brightness down, Gaussian blur);
- text: another site's reporting vocabulary (abbreviations and boilerplate instead of the usual words).

Each takes and returns the JSON value `/predict` takes for the modality (`schemas.file_to_wire`). A kind's
`nudge` is the small version, a change a model must not care about (5 % gain or light, a synonym): the
behavioural tests' invariance check (`nudge_record`).
"""

from __future__ import annotations

from typing import Any

from mmops.domains import DomainPack
from mmops.modalities import kind_of


def shift_record(pack: DomainPack, payload: dict[str, Any]) -> dict[str, Any]:
    """The same record as the field would send it after the shift (its id marked)."""
    inputs = {name: kind_of(pack.modality(name)).shift(value, pack.modality(name)) for name, value in payload["inputs"].items()}
    return {**payload, "id": f"shifted-{payload.get('id')}", "inputs": inputs}


def nudge_record(pack: DomainPack, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The same record after a change the model must not care about (its id marked); None where a modality's
    kind has no such change."""
    inputs = {}
    for name, value in payload["inputs"].items():
        nudged = kind_of(pack.modality(name)).nudge(value, pack.modality(name))
        if nudged is None:
            return None
        inputs[name] = nudged
    return {**payload, "id": f"nudged-{payload.get('id')}", "inputs": inputs}
