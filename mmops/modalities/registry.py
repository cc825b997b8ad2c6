"""The modality kinds there are: the bundled ones (sensor, image, text, audio, video) and those plug-ins register.

A plug-in is a Python module that calls `register(MyKind())` when imported. mmops imports it when it is
named in `MMOPS_PLUGINS` (comma-separated module names) or declared as an entry point of the group
`mmops.plugins` by an installed package, before any domain pack is read. Adding a kind to mmops itself is
one module here and one line in `_BUNDLED`.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import Any

from mmops.errors import ConfigError
from mmops.modalities.base import ModalityKind, ModalitySpec

_BUNDLED = ("mmops.modalities.sensor:SensorKind", "mmops.modalities.image:ImageKind",
            "mmops.modalities.text:TextKind", "mmops.modalities.audio:AudioKind", "mmops.modalities.video:VideoKind")
_KINDS: dict[str, ModalityKind] = {}
_LOCK = threading.RLock()
_LOADED = False


def register(kind: ModalityKind) -> ModalityKind:
    """Make `kind` available to domain packs (`kind: <its name>`); registering a name twice is an error
    unless it is the same class (a module imported twice)."""
    with _LOCK:
        known = _KINDS.get(kind.name)
        if known is not None and type(known).__qualname__ != type(kind).__qualname__:
            raise ConfigError(f"modality kind {kind.name!r} is registered twice ({type(known).__module__} and "
                              f"{type(kind).__module__})")
        if kind.spec.model_fields["kind"].default != kind.name:
            raise ConfigError(f"modality kind {kind.name!r}: its spec's `kind` must default to {kind.name!r}")
        _KINDS[kind.name] = kind
    return kind


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    with _LOCK:
        if _LOADED:
            return
        for ref in _BUNDLED:
            module, cls = ref.split(":")
            register(getattr(importlib.import_module(module), cls)())
        _LOADED = True  # before the plug-ins: they register() while being imported
        for name in plugin_modules():
            try:
                importlib.import_module(name)
            except ImportError as exc:
                raise ConfigError(f"plug-in {name!r} (MMOPS_PLUGINS or an mmops.plugins entry point) cannot be "
                                  f"imported: {exc}") from exc


def plugin_modules() -> list[str]:
    """The plug-in modules to import: MMOPS_PLUGINS, then the installed `mmops.plugins` entry points."""
    from importlib.metadata import entry_points

    named = [m.strip() for m in os.environ.get("MMOPS_PLUGINS", "").split(",") if m.strip()]
    return named + [ep.value.split(":")[0] for ep in entry_points(group="mmops.plugins")]


def kinds() -> dict[str, ModalityKind]:
    """Every registered kind by name."""
    _load()
    return dict(_KINDS)


def kind_of(spec: ModalitySpec | str) -> ModalityKind:
    """The kind of a modality spec (or a kind's name)."""
    _load()
    name = spec if isinstance(spec, str) else spec.kind
    try:
        return _KINDS[name]
    except KeyError:
        raise ConfigError(f"unknown modality kind {name!r}; registered: {sorted(_KINDS)} (a plug-in's module "
                          "goes in MMOPS_PLUGINS)") from None


def parse_spec(raw: Any) -> ModalitySpec:
    """One modality of a domain pack (a mapping with `kind`) -> its kind's spec, validated."""
    if isinstance(raw, ModalitySpec):
        return raw
    if not isinstance(raw, dict) or "kind" not in raw:
        raise ValueError("a modality needs a `kind` (" + ", ".join(sorted(kinds())) + ")")
    try:
        kind = kind_of(str(raw["kind"]))
    except ConfigError as exc:  # pydantic reports a ValueError with the pack's location
        raise ValueError(str(exc)) from None
    return kind.spec.model_validate(raw)
