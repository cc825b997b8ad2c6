"""The results page (docs/results.md): which run wrote which data sets' rows, the rows, and the notes about
the data. `mmops results` writes it whole, or (`--merge`) replaces one domain's rows and keeps the others; the
page reads back exactly (`from_markdown`), so a merge never retypes a figure."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass

from mmops.errors import ConfigError
from mmops.results import EARLY_REPEATS, EARLY_SECONDS, TORCH_THREADS, UCR_EPOCHS, UCR_PATIENCE, Row
from mmops.tasks.anomaly.results import AnomalyRow

AnyRow = Row | AnomalyRow
ANOMALY_HEADER = "| data set | detector | AUROC | AUPRC | F1 | recall | FPR | n test | anomalous | seconds | note |"


@dataclass(frozen=True)
class Run:
    """One `mmops results` run: its command, where and on what it ran, and the data sets whose rows it wrote."""

    command: str
    at: str
    keys: tuple[str, ...]

    def line(self) -> str:
        return f"- `{self.command}` at {self.at}: {', '.join(self.keys)}"


def row_key(dataset: str) -> str:
    """The data set a row belongs to, as a run names it: the domain (`industrial, first 1 s (...)` ->
    `industrial`) or `UCR`."""
    return dataset.split(" ", 1)[0].rstrip(",")


def provenance() -> str:
    """Where and on what a run runs: the source's commit (and whether it had uncommitted changes), the date,
    the versions, the device and the thread count. Taken when the run starts (the code that ran)."""
    import torch

    from mmops import __version__
    from mmops.config import get_settings
    from mmops.provenance import source_state

    return (f"{source_state(get_settings().root)} on {time.strftime('%Y-%m-%d')} (mmops {__version__}, torch "
            f"{torch.__version__}, {platform.machine()}, {'CUDA' if torch.cuda.is_available() else 'CPU'}, "
            f"{TORCH_THREADS} torch thread)")


def this_run(command: str, rows: list[AnyRow], at: str | None = None) -> Run:
    return Run(command, at or provenance(), tuple(dict.fromkeys(row_key(r.dataset) for r in rows)))


def merge(earlier: tuple[list[Run], list[AnyRow]], run: Run, rows: list[AnyRow]) -> tuple[list[Run], list[AnyRow]]:
    """An earlier table with this run's data sets replaced by its rows (the others kept, with their runs)."""
    old_runs, old_rows = earlier
    keep = [r for r in old_rows if row_key(r.dataset) not in run.keys]
    runs = [Run(r.command, r.at, tuple(k for k in r.keys if k not in run.keys)) for r in old_runs]
    # domains in the order they first appear, the UCR sets last
    order = list(dict.fromkeys(row_key(r.dataset) for r in old_rows + rows))
    order = [k for k in order if k != "UCR"] + ["UCR"]
    merged = sorted(keep + rows, key=lambda r: order.index(row_key(r.dataset)))
    return [r for r in runs if r.keys] + [run], merged


def from_markdown(text: str) -> tuple[list[Run], list[AnyRow]]:
    """The runs and rows of the tables `to_markdown` wrote."""
    runs: list[Run] = []
    rows: list[AnyRow] = []
    anomaly = False  # which table the rows are of
    for line in text.splitlines():
        if line.startswith("- `"):
            command, rest = line[3:].split("` at ", 1)
            at, keys = rest.rsplit(": ", 1)
            runs.append(Run(command, at, tuple(keys.split(", "))))
        elif line.startswith("| data set "):
            anomaly = line.startswith(ANOMALY_HEADER)
        elif line.startswith("| ") and not line.startswith("| --- "):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if len(cells) != (11 if anomaly else 8):
                raise ConfigError(f"not a results row: {line!r}")
            rows.append(_anomaly_row(cells) if anomaly else _row(cells))
    if rows and not runs:
        raise ConfigError("the table does not say which run wrote its rows; regenerate it whole (mmops results)")
    return runs, rows


def _num(cell: str) -> float | None:
    return None if cell == "-" else float(cell)


def _row(cells: list[str]) -> Row:
    d, m, acc, f1, auroc, n, secs, note = cells
    return Row(d, m, float(acc), float(f1), _num(auroc), int(n), float(secs), note)


def _anomaly_row(cells: list[str]) -> AnomalyRow:
    d, m, auroc, auprc, f1, recall, fpr, n, bad, secs, note = cells
    return AnomalyRow(d, m, _num(auroc), _num(auprc), float(f1), float(recall), _num(fpr), int(n), int(bad),
                      float(secs), note)


def _composed_notes(keys: set[str]) -> list[str]:
    """What each composed pack on the page is made of, with its sources' licences (as `mmops data list`)."""
    from mmops.datasets.packs import PACKS

    return [f"The {p.domain} pack is composed: {p.summary.removeprefix('COMPOSED: ')}; sources: {p.license}."
            for p in PACKS.values() if p.domain in keys and "COMPOSED" in p.summary]


def to_markdown(rows: list[AnyRow], runs: list[Run]) -> str:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    keys = {row_key(r.dataset) for r in rows}
    lines = [
        "# Results", "",
        "Regenerated by `mmops results` (every data set) or `mmops results --merge -d <domain>` (that domain's "
        "rows replaced, the others kept). Each data set's rows come from the run listed with it:", "",
        *(r.line() for r in runs), "",
        "Test-split figures; every model of a data set sees the same split (or the same cross-validation folds), "
        f"seed and epoch budget; on the UCR sets our models get {UCR_EPOCHS} epochs (patience {UCR_PATIENCE}). "
        "Training runs on one torch thread: a model's figures depend on the thread count, which changes the "
        "order of floating-point sums.", "",
        "Notes: single-modality rows are scored on the test records that have that modality; the medical "
        "pack pairs modalities by class, not by patient (see `mmops data list`), so its fusion figures say "
        "little about real clinical fusion.", "",
        *(n + "\n" for n in _composed_notes(keys)),
    ]
    if any(", first " in r.dataset for r in rows):
        lines += [
            "Really paired modalities: the industrial pack's accelerometer and gyroscope are recorded together. "
            "With the whole 10 s window every model is at its ceiling, so the pack is also scored on the first "
            f"{' s and '.join(f'{s:g}' for s in EARLY_SECONDS)} s of each window (early classification, "
            f"{EARLY_REPEATS}x repeated k-fold CV); each fusion row's note compares it fold by fold with the "
            "best single modality on the same test records.", "",
        ]
    lines += [
        "| data set | model | accuracy | macro-F1 | AUROC | n test | seconds | note |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        if isinstance(r, Row):
            lines.append(f"| {r.dataset} | {r.model} | {f(r.accuracy)} | {f(r.macro_f1)} | {f(r.auroc)} | "
                         f"{r.n_test} | {r.seconds:.1f} | {r.note} |")
    anomalies = [r for r in rows if isinstance(r, AnomalyRow)]
    if anomalies:
        lines += [
            "", "## Anomaly detection", "",
            "Detectors fitted on the normal training records only, each thresholded at the same false-positive "
            "rate (params.yaml train.anomaly.fpr) on the same validation normals; F1, recall and the realized "
            "FPR (on the test normals) at that threshold. Anchors: aeon's ROCKAD on the series, scikit-learn's "
            "IsolationForest and LOF on the same standardised inputs, and aeon's point detectors (STOMP, MERLIN, "
            "KMeansAD) on single-series packs (docs/anomaly-detection.md). Each note's p tests the realized FPR "
            "against the target as monitoring does (beta-binomial, counting the threshold's own error from the "
            "validation normals): with a few dozen test normals, 0 false positives can be what a 0.05 target "
            "predicts (p above 0.05); overlapping windows make the test normals fewer than they look.", "",
            ANOMALY_HEADER, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
            *(f"| {r.dataset} | {r.model} | {f(r.auroc)} | {f(r.auprc)} | {f(r.f1)} | {f(r.recall)} | {f(r.fpr)} "
              f"| {r.n_test} | {r.n_anomalous} | {r.seconds:.1f} | {r.note} |" for r in anomalies),
        ]
    return "\n".join(lines) + "\n"
