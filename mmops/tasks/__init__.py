"""Task kinds: what a domain's model is trained to do with a record, and how it is judged. A domain pack names
its task (`task: classification`, the default); training, evaluation and the registry call the task kind, so
that a new task (anomaly detection trained on normal records, cross-modal search) is one module here and one
registration, beside the stages rather than inside them.

A task kind checks a pack that declares it (`check_pack`: its `task_options`), trains a model on a dataset
version (`train`) and loads it back (`load`), turns a model's answers on records into the outputs it is
judged on (`outputs`), scores them against the truth (`metrics`, which include every name in
`registry_metrics`: what the registry keeps and promotes on), draws its report (`report`), says what
monitoring watches of its answers (`observe`), and pre-labels records for the review queue (`prelabel`:
a classifier's least sure answers first, a detector's most anomalous).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mmops.errors import ConfigError

_BUNDLED = {"classification": "mmops.tasks.classification:Classification",
            "anomaly": "mmops.tasks.anomaly:Anomaly"}
_TASKS: dict[str, TaskKind] = {}


@dataclass(frozen=True)
class Prelabel:
    """A model's label for a record no human has labeled yet, and the record's place in the review queue."""

    label: str
    confidence: float | None  # kept with the label (a classifier's top probability; None for a detector)
    detail: dict[str, Any]  # kept with the label: probabilities, or the anomaly score and what drove it
    priority: float  # the review queue's rank: higher is reviewed first
    method: str  # how priority was reckoned (entropy, margin, anomaly_score)
    scores: dict[str, float]  # shown beside the suggestion in the queue and in Label Studio


class TaskKind:
    name: ClassVar[str]
    registry_metrics: ClassVar[tuple[str, ...]]  # kept by the registry with each version; promote.metric is one
    headline_metrics: ClassVar[tuple[str, ...]]  # what `evaluate` answers with
    modality_metrics: ClassVar[tuple[str, ...]]  # per subset of the modalities, in metrics.json and the card
    calibration_keys: ClassVar[tuple[str, ...]] = ()  # what `calibration` measures; a complete card has each
    promote_metric: ClassVar[str]  # what the registry promotes on when params.yaml's promote.metric is not one

    def check_pack(self, pack: Any) -> None:
        """Raise ValueError when a pack that declares this task cannot be trained for it."""
        if pack.task_options:
            raise ValueError(f"task {self.name} takes no task_options (got {sorted(pack.task_options)})")

    def train(self, pack: Any, manifest: Any, data_root: Path, params: Any, seed: int, out_dir: Path,
              progress: Any = None, resume: bool | str = False) -> Any:
        """Train on the version's train split, select on its val split; returns a TrainResult."""
        raise NotImplementedError

    def load(self, model_dir: Path, device: str = "auto") -> Any:
        """The model `train` wrote to model_dir, ready for `outputs` and `observe`."""
        raise NotImplementedError

    def targets(self, pack: Any, rows: list[Any]) -> np.ndarray:
        """The truth of manifest rows, as `metrics` takes it."""
        raise NotImplementedError

    def outputs(self, predictor: Any, values: list[dict[str, Any]]) -> np.ndarray:
        """A model's outputs on decoded records (one row per record)."""
        raise NotImplementedError

    def metrics(self, y: np.ndarray, outputs: np.ndarray, classes: list[str]) -> dict[str, Any]:
        raise NotImplementedError

    def decisions(self, outputs: np.ndarray) -> np.ndarray:
        """The answer each row of `outputs` gives, as an index into the pack's classes (a detector's: 1 where
        it flags the record): what the behavioural checks compare. Default: the most probable class."""
        return np.asarray(outputs).argmax(axis=1)

    def observe(self, predictor: Any, values: list[dict[str, Any]], classes: list[str]
                ) -> tuple[dict[str, list[Any]], dict[str, np.ndarray]]:
        """What monitoring compares with the reference, per record: output columns (always `prediction`,
        categorical; others numeric) and per-modality embeddings (NaN rows where a record lacks one)."""
        raise NotImplementedError

    def serve(self, predictor: Any, values: list[dict[str, Any]], embeddings: bool) -> list[dict[str, Any]]:
        """The model's answers to decoded records, as JSON-able dicts (the service's model worker runs this);
        with `embeddings`, each answer's "embeddings" (modality -> vector) for the prediction log."""
        raise NotImplementedError

    def answer(self, raw: dict[str, Any], classes: list[str]) -> dict[str, Any]:
        """One raw answer of `serve` -> the fields of the API's PredictionOut (label, probabilities, anomaly)
        and "outputs" (numbers the prediction log keeps for monitoring); BadInputError when the model's
        output is not a number (inputs far outside what it was fitted to)."""
        raise NotImplementedError

    def prelabel(self, predictor: Any, values: list[dict[str, Any]], method: str) -> list[Prelabel]:
        """The model's label for each decoded record and its review priority (`method`: params.yaml's
        label.uncertainty, where the task ranks by uncertainty)."""
        raise NotImplementedError

    def calibration(self, predictor: Any, values: list[dict[str, Any]], y: np.ndarray, outputs: np.ndarray,
                    ) -> dict[str, Any]:
        """Figures of how the model's outputs are calibrated on held-out records (`calibration_keys`), for the
        metrics and the model card."""
        return {}

    def explain(self, predictor: Any, values: list[dict[str, Any]], target: str | None = None) -> list[dict[str, Any]]:
        """Why the model answered as it did, per decoded record: `value` (what is explained), `base` (its
        value with no modality), and per modality its exact Shapley value of value - base and a map inside
        it (mmops.explain); `target`: a class to explain instead of the answer, where the task has classes."""
        raise NotImplementedError(f"task {self.name} does not explain its answers yet")

    def tally(self, frame: Any) -> dict[str, int]:
        """Counts of a chunk of monitored answers (output columns, as `observe` gives them) that `alerts`
        judges once the whole window is in; summed over chunks."""
        return {}

    def alerts(self, counts: dict[str, int], card: Any, params: Any) -> dict[str, Any]:
        """What the task watches in its answers beyond drift, by name -> a verdict with an `alert` flag
        (params: params.yaml's monitor block)."""
        return {}

    def agrees(self, pack: Any, answer: str, truth: str) -> bool:
        """Whether a served answer's label is right about a record of class `truth`."""
        return answer == truth

    def report(self, metrics: dict[str, Any], y: np.ndarray, outputs: np.ndarray, classes: list[str], title: str,
               out_dir: Path) -> dict[str, str]:
        """Plots of the evaluation, by name -> path."""
        return {}


def register(task: TaskKind) -> TaskKind:
    _TASKS[task.name] = task
    return task


def task_kinds() -> list[str]:
    return sorted({*_BUNDLED, *_TASKS})


def task_of(name: str) -> TaskKind:
    """The registered task kind `name` (a domain pack's `task`)."""
    if name not in _TASKS and name in _BUNDLED:
        module, cls = _BUNDLED[name].split(":")
        register(getattr(importlib.import_module(module), cls)())
    try:
        return _TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; choose from {task_kinds()}") from None
