"""Where each benchmark leaves its figures, and the page made from them.

Every `bench_*.py` ends with `save(name, figures, verdicts)`: var/bench/<name>.json holds the command it ran,
the machine, the versions, the figures and the verdicts (targets met or not). `python benchmarks/record.py`
(the last step of `make bench`) renders docs/benchmarks.md from whatever var/bench/ holds, each section with
the date, machine and command of its run, so that the page says exactly what was measured and how.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "var" / "bench"

TITLES = {  # in the page's order
    "ingest": ("Ingest", "ingest of the bundled packs vs a plain loop that reads, hashes, decodes and durably "
                         "copies the same files (throughput), and a re-ingest of unchanged files (skipped by "
                         "hash)"),
    "ingest-surveillance": ("Ingest of audio and video", "ingest of the surveillance-av pack (camera clips and "
                            "microphone recordings) vs a plain loop that reads, hashes and fully decodes the same "
                            "files"),
    "ingest-scale": ("Ingest at scale", "one ingest of 10,000 and of 100,000 small files (composed from the "
                     "medical pack's real files, each copy made distinct; sources and licences in "
                     "benchmarks/bench_ingest_scale.py): the cost per file and the ingest process's peak RSS"),
    "gate": ("Validation gate", "the Great Expectations suites vs plain pandas checks of the same rules"),
    "train": ("Training", "the trainer vs a hand-written torch loop on the same data and model"),
    "train-state": ("Training state", "the medical model's per-epoch resumable state (train_state/last.pt) as "
                    "written now (what the run changed, and the hashes of the unchanged pretrained tensors) vs the "
                    "earlier layout (every tensor, and a whole copy of the best weights): size and time to write, "
                    "at an early epoch (backbones frozen) and the last (unfrozen)"),
    "serve": ("Serving", "throughput and latency over HTTP at several client counts: adaptive batching on vs "
                         "off, prediction log on vs off (medians of rounds); the served model against itself "
                         "called in a plain loop, each step of a request timed in process, and the floor of a "
                         "service that answers a constant"),
    "serve-floor": ("Serving floors", "what a BentoML service that answers a constant reaches here under the "
                    "same load generator, alone and through a second service as mmops's API service hands "
                    "records to its model service (the hop's own cost)"),
    "serve-surveillance": ("Serving audio and video", "surveillance records (a 4 s camera clip and a 4 s "
                           "microphone clip, base64) over HTTP: adaptive batching on vs off, log on vs off"),
    "serve-anomaly": ("Serving the anomaly detectors", "the cardiac (ECG), inspection (image) and watch (video + "
                      "audio) detectors over HTTP: adaptive batching on vs off, log on vs off"),
    "serve-runtimes": ("Serving runtimes", "each classifier packaged for eager torch, ONNX Runtime (onnx) and "
                       "ONNX Runtime with int8 weights (int8): the parity gate's figures, model file size, "
                       "in-process batched throughput (batches of 64, no HTTP), served throughput and latency over "
                       "HTTP at 1-64 clients (medians of rounds), and the service's RSS"),
    "serve-shadow": ("Shadow", "the champion's clients' throughput and latency over HTTP with a challenger in "
                     "shadow (here the champion's own model loaded again: a challenger as heavy as the champion) "
                     "vs without, at 8 and 32 clients (medians of rounds), and how much of the traffic the "
                     "challenger saw; target: shadow on >= 0.9x off"),
    "explain": ("Explanations", "POST /explain over HTTP, one record per request, at 1 and 8 clients, beside "
                "POST /predict of the same records on the same service; and one explained held-out record per "
                "domain (its figure in docs/explanations/, shown in docs/explanations.md)"),
    "explain-surveillance": ("Explanations of clips", "POST /explain of surveillance records (a camera clip "
                             "and a microphone clip) at 1 and 8 clients, rerun alone: the full run's 8-client "
                             "level ran out of time in its warm-up"),
    "estimation": ("Accuracy estimated without labels", "CBPE (the mean probability of the answered class, "
                   "mmops/estimation.py) against the realized accuracy per monitoring window, on the test split "
                   "with a growing share of field-shifted records (mmops/shifts.py), beside NannyML's CBPE where "
                   "it imports"),
    "drift": ("Drift", "the streamed reference-sketch check vs Evidently's DataDriftPreset on the same "
                       "columns, at growing row counts; then a long stream through one check in a process of "
                       "its own that loads the saved sketch (its throughput and peak RSS)"),
    "audio": ("Audio front end", "log-mel spectrograms of real speech on one thread, in seconds of audio per "
                                 "second of compute, beside librosa on the same clips"),
    "anomaly": ("Anomaly scoring", "the memory bank's nearest-neighbour scoring with the full bank vs k-center "
                "coresets of it, with the AUROC each reaches, on real ECG and on a real texture with composed "
                "defects"),
    "calibration": ("Anomaly thresholds on new normals", "the realized false-positive rate of the shipped "
                    "detectors' calibrated thresholds on hundreds of new normal records of the packs' sources, "
                    "calibrated and counted as each pack splits its source, beside another split of it for "
                    "contrast"),
    "soak": ("Soak", "the service under steady load with hot reloads: memory, descriptors and p99 latency "
                     "over time"),
}


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("mmops", "torch", "bentoml", "great_expectations", "evidently"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def save(name: str, figures: dict[str, Any], verdicts: dict[str, bool] | None = None) -> Path:
    """Record a benchmark's run in var/bench/<name>.json (the page is rendered from these)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    record = {
        "bench": name, "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": shlex.join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(terse=True),
                    "python": platform.python_version(), "cuda": _cuda()},
        "versions": _versions(), "figures": figures, "verdicts": verdicts or {},
    }
    path.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: VmHWM (Linux), which starts afresh at exec; getrusage's
    maxrss instead keeps the peak of the process a child was forked from (a benchmark's parent)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _cuda() -> str | None:
    if "torch" not in sys.modules:
        return None
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return str(value)


def _table(rows: list[dict[str, Any]]) -> list[str]:
    cols = [c for c in rows[0] if all(not isinstance(r.get(c), dict) for r in rows)]
    out = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    out += ["| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return out


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    return {f"{k} {kk}" if isinstance(v, dict) else k: vv if isinstance(v, dict) else v
            for k, v in row.items() for kk, vv in (v.items() if isinstance(v, dict) else [(None, v)])}


def section(record: dict[str, Any]) -> list[str]:
    title, what = TITLES.get(record["bench"], (record["bench"], ""))
    m = record["machine"]
    lines = [f"## {title}", "", f"{what[:1].upper()}{what[1:]}." if what else "",
             "", f"`{record['command']}` on {record['at']}: {m['cpus']} CPUs"
                 f"{', ' + m['cuda'] if m.get('cuda') else ', no GPU'}, {m['platform']}, Python {m['python']}; "
             + ", ".join(f"{k} {v}" for k, v in record["versions"].items()) + ".", ""]
    figures = record["figures"]
    scalars = {k: v for k, v in figures.items() if not isinstance(v, list | dict)}
    if scalars:
        lines += ["| figure | value |", "| --- | ---: |", *(f"| {k} | {_cell(v)} |" for k, v in scalars.items())]
    for key, value in figures.items():
        if isinstance(value, dict) and value and all(not isinstance(v, dict | list) for v in value.values()):
            lines += ["", f"{key}:", "", "| | value |", "| --- | ---: |",
                      *(f"| {k} | {_cell(v)} |" for k, v in value.items())]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines += ["", f"{key}:", "", *_table(value)]
        elif isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            # by name, each a flat record (one level below flattened: {"ms": {"p50": ..}} -> "ms p50")
            lines += ["", f"{key}:", "", *_table([{"": name, **_flat(row)} for name, row in value.items()])]
    if record["verdicts"]:
        lines += ["", "| target | met |", "| --- | --- |",
                  *(f"| {k} | {'yes' if ok else '**no**'} |" for k, ok in record["verdicts"].items())]
    return [*lines, ""]


def earlier_sections(page: str) -> dict[str, list[str]]:
    """The sections of a page this module rendered before, by benchmark name (its title): kept for the
    benchmarks that var/bench/ has no figures of, each still naming its own command and date."""
    by_title = {title: name for name, (title, _) in TITLES.items()}
    out: dict[str, list[str]] = {}
    name = None
    for line in page.splitlines():
        if line.startswith("## "):
            name = by_title.get(line[3:].strip())
            if name is not None:
                out[name] = []
        if name is not None:
            out[name].append(line)
    return {n: [*lines[:len(lines) - next(i for i, x in enumerate(reversed(lines)) if x.strip())], ""]
            for n, lines in out.items()}


def render(results: Path = RESULTS, earlier: str = "") -> str:
    records = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(results.glob("*.json"))}
    kept = {n: lines for n, lines in earlier_sections(earlier).items() if n not in records}
    order = [n for n in TITLES if n in records or n in kept] + sorted(set(records) - set(TITLES))
    lines = ["# Benchmarks", "",
             "Regenerated by `make bench` (every `benchmarks/bench_*.py`, then `python benchmarks/record.py`) from "
             "the figures each run leaves in var/bench/; do not edit by hand. A benchmark var/bench/ has no "
             "figures of keeps its section from the page before. Speed targets are ratios against a baseline run "
             "side by side in the same process, so that a noisy or slower machine moves both; each section names "
             "the command, machine and versions it was measured with.", ""]
    missing = [n for n in TITLES if n not in order]
    if missing:
        lines += [f"Never measured: {', '.join(missing)}.", ""]
    for name in order:
        lines += section(records[name]) if name in records else kept[name]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    target = ROOT / "docs" / "benchmarks.md"
    before = target.read_text(encoding="utf-8") if target.exists() else ""
    target.write_text(render(earlier=before), encoding="utf-8")
    print(f"wrote {target}")
