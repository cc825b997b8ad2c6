"""The validation gate: Great Expectations suites per modality (from the domain pack's declared schema) and
for labels, run over a domain's labeled records. Critical expectations fail the gate; warnings are reported.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmops.domains import DomainPack
from mmops.modalities import Expectation, kind_of
from mmops.records import Record

log = logging.getLogger(__name__)

MIN_RECORDS_PER_CLASS = 5
DOCS_SITE = "mmops"


@dataclass
class GateResult:
    domain: str
    fingerprint: str
    success: bool
    n_expectations: int
    failed: list[str] = field(default_factory=list)  # "<suite>: <expectation>(<column>) ..." lines, critical
    warnings: list[str] = field(default_factory=list)
    n_records: int = 0
    n_labeled: int = 0
    data_docs: str | None = None  # Great Expectations Data Docs (HTML) of this run: the index page

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()




def _expectations(pack: DomainPack) -> dict[str, list[Expectation]]:
    """suite name -> expectations, generated from the domain pack's declared schema."""
    k = len(pack.classes)
    labels: list[Expectation] = [
        ("ExpectColumnValuesToNotBeNull", {"column": "label"}, "critical"),
        ("ExpectColumnValuesToBeInSet", {"column": "label", "value_set": list(pack.classes)}, "critical"),
        ("ExpectColumnDistinctValuesToContainSet", {"column": "label", "value_set": list(pack.classes)}, "critical"),
        ("ExpectTableRowCountToBeBetween", {"min_value": MIN_RECORDS_PER_CLASS * k}, "critical"),
        ("ExpectColumnValuesToBeBetween",
         {"column": "n_modalities", "min_value": 1, "max_value": len(pack.modalities)}, "critical"),
        ("ExpectColumnMeanToBeBetween", {"column": "n_modalities", "min_value": 0.5 * len(pack.modalities)}, "warning"),
    ]
    for spec in pack.modalities:
        if spec.required:  # records: a required modality is present in every record
            labels.append(("ExpectColumnValuesToBeInSet", {"column": f"has_{spec.name}", "value_set": [True]},
                           "critical"))
    suites: dict[str, list[Expectation]] = {
        "labels": labels,
        # class balance: no class below a fifth of its fair share (warning: rare classes exist)
        "class_balance": [("ExpectColumnValuesToBeBetween", {"column": "share", "min_value": 0.2 / k}, "warning")],
        # coverage: the share of ingested records that carry a label training may use
        "coverage": [("ExpectColumnValuesToBeBetween", {"column": "labeled_share", "min_value": 0.5}, "warning")],
    }
    for spec in pack.modalities:  # each modality's own checks, from its kind
        suites[spec.name] = kind_of(spec).expectations(spec)
    return suites


# --- suites as reviewable files -------------------------------------------------------------------------

SEVERITIES = ("critical", "warning")


def suite_path(root: Path, domain: str) -> Path:
    """Where a domain's reviewed suites live: `expectations/<domain>.yaml` at the project's top (committed)."""
    return root / "expectations" / f"{domain}.yaml"


def load_suites(path: Path) -> dict[str, list[Expectation]]:
    """Read a suites file, checking every expectation names a Great Expectations class and a severity."""
    import great_expectations.expectations as gxe
    import yaml

    from mmops.errors import ConfigError

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"suites file {path}: {exc}") from None
    suites: dict[str, list[Expectation]] = {}
    for name, items in (doc or {}).get("suites", {}).items():
        suites[name] = []
        for n, item in enumerate(items or []):
            cls, kwargs, severity = item.get("expectation"), item.get("kwargs") or {}, item.get("severity")
            if not isinstance(cls, str) or not hasattr(gxe, cls) or severity not in SEVERITIES:
                raise ConfigError(f"suites file {path}: {name}[{n}] needs an expectation class of Great "
                                  f"Expectations and a severity in {SEVERITIES}; got {item}")
            suites[name].append((cls, dict(kwargs), severity))
    if not suites:
        raise ConfigError(f"suites file {path} defines no suites")
    return suites


def write_suites(path: Path, domain: str, suites: dict[str, list[Expectation]], header: str) -> int:
    import yaml

    doc = {"domain": domain, "suites": {name: [{"expectation": c, "kwargs": k, "severity": sev}
                                               for c, k, sev in items] for name, items in suites.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump(doc, sort_keys=False, width=110, default_flow_style=None)
    path.write_text("".join(f"# {line}\n" for line in header.splitlines()) + body, encoding="utf-8")
    return sum(len(v) for v in suites.values())


def profile_suites(pack: DomainPack, reference: list[Record], margin: float = 0.25) -> dict[str, list[Expectation]]:
    """The pack's schema expectations plus, for every summary statistic of every modality, the range seen in
    the reference records widened by `margin` of its spread (warning: a batch that leaves it is unusual,
    not necessarily wrong), and class shares no lower than half the reference's."""
    import numpy as np

    suites = _expectations(pack)
    labeled = [r for r in reference if r.label is not None]
    frames = _frames(pack, reference, labeled)
    for spec in pack.modalities:
        df = frames[spec.name]
        for column in sorted(c for c in df.columns if c not in ("key", "sha256")):
            values = df[column].astype(float).to_numpy()
            lo, hi = float(np.min(values)), float(np.max(values))
            # a constant statistic gets a band around its value (or +-1 around zero)
            pad = margin * (hi - lo) if hi > lo else (margin * abs(hi) or 1.0)
            suites[spec.name].append(("ExpectColumnValuesToBeBetween", {
                "column": column, "min_value": round(lo - pad, 6), "max_value": round(hi + pad, 6),
                "mostly": 0.95}, "warning"))
    shares = frames["class_balance"]
    suites["class_balance"] = [("ExpectColumnValuesToBeBetween", {"column": "share", "min_value": round(min(
        float(x) for x in shares["share"]) / 2, 6)}, "warning")]
    return suites


def _frames(pack: DomainPack, records: list[Record], labeled: list[Record]) -> dict[str, Any]:
    import pandas as pd

    label_rows = []
    for r in labeled:
        row: dict[str, Any] = {"key": r.key, "label": r.label, "n_modalities": len(r.files)}
        row.update({f"has_{m}": m in r.files for m in pack.modality_names})
        label_rows.append(row)
    frames: dict[str, Any] = {"labels": pd.DataFrame(label_rows)}
    counts = pd.Series([r.label for r in labeled]).value_counts() if labeled else pd.Series(dtype=float)
    frames["class_balance"] = pd.DataFrame(
        {"label": list(pack.classes), "share": [counts.get(c, 0) / max(1, len(labeled)) for c in pack.classes]})
    frames["coverage"] = pd.DataFrame({"labeled_share": [len(labeled) / max(1, len(records))]})
    for spec in pack.modalities:
        rows = [{"key": r.key, "sha256": r.files[spec.name].sha256, **r.files[spec.name].stats}
                for r in labeled if spec.name in r.files]
        frames[spec.name] = pd.DataFrame(rows)
    return frames


def run_gate(pack: DomainPack, records: list[Record], fingerprint: str, report_path: Path,
             docs_dir: Path | None = None, suites: dict[str, list[Expectation]] | None = None) -> GateResult:
    """Validate the labeled records; writes a JSON report with every expectation's result and, with
    `docs_dir`, Great Expectations Data Docs (HTML: the suites and this run's results) there."""
    labeled = [r for r in records if r.label is not None]
    result = GateResult(pack.name, fingerprint, True, 0, n_records=len(records), n_labeled=len(labeled))
    details = validate_frames(pack.name, _frames(pack, records, labeled), suites or _expectations(pack), result,
                              docs_dir)
    if docs_dir is not None and result.data_docs:
        log.info("%s validation Data Docs: %s", pack.name, result.data_docs)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    # the report is a DVC output: no machine-specific paths in it (the Data Docs link is relative)
    saved = {**result.to_json(), "expectations": details}
    if docs_dir is not None and result.data_docs:
        saved["data_docs"] = os.path.relpath(docs_dir / "index.html", report_path.parent)
    report_path.write_text(json.dumps(saved, indent=2, default=str))
    return result


def validate_frames(name: str, frames: dict[str, Any], suites: dict[str, list[Expectation]], result: GateResult,
                    docs_dir: Path | None = None) -> list[dict[str, Any]]:
    """Run each suite on its frame with Great Expectations; fills `result` (failed, warnings, counts, success,
    Data Docs link) and returns every expectation's outcome."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.checkpoint.actions import ValidationAction
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # "Created temporary directory ... for ephemeral docs site" on every run is noise, not information
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # task logs, not tqdm noise
    actions: list[ValidationAction] = []
    if docs_dir is not None:
        docs_dir.mkdir(parents=True, exist_ok=True)
        context.add_data_docs_site(DOCS_SITE, {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE]))
    source = context.data_sources.add_pandas(f"mmops_{name}")
    details: list[dict[str, Any]] = []
    for suite_name, expectations in suites.items():
        if suite_name not in frames:
            result.failed.append(f"{suite_name}: no such suite for {name} (known: {sorted(frames)})")
            continue
        df = frames[suite_name]
        if df.empty:
            if suite_name == "labels":
                result.failed.append("labels: no labeled records (run `mmops label`)")
            continue
        suite = context.suites.add(gx.ExpectationSuite(name=f"{name}.{suite_name}"))
        for cls_name, kwargs, severity in expectations:
            if "column" in kwargs and kwargs["column"] not in df.columns:
                # statistics an older mmops did not compute: say so instead of a cryptic GX exception
                result.failed.append(f"{suite_name}: column {kwargs['column']} is missing from the records' "
                                     "statistics; re-ingest them with this version (`mmops ingest`)")
                continue
            suite.add_expectation(getattr(gxe, cls_name)(**kwargs, meta={"severity": severity}))
        batch_def = source.add_dataframe_asset(name=suite_name).add_batch_definition_whole_dataframe("all")
        # a checkpoint per suite (each has its own frame): its action renders the run into the Data Docs
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(data=batch_def, suite=suite, name=f"{name}.{suite_name}"))
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name=f"{name}.{suite_name}", validation_definitions=[definition], actions=actions,
            result_format="SUMMARY"))
        run = checkpoint.run(batch_parameters={"dataframe": df})
        outcome = next(iter(run.run_results.values()))
        for r in outcome.results:
            cfg = r.expectation_config
            assert cfg is not None  # GX always echoes the configuration it ran
            severity = (cfg.meta or {}).get("severity", "critical")
            kwargs = {k: v for k, v in cfg.kwargs.items() if k != "batch_id"}
            observed = {k: r.result.get(k) for k in ("observed_value", "unexpected_count",
                                                     "partial_unexpected_list") if k in r.result}
            details.append({"suite": suite_name, "expectation": cfg.type, "kwargs": kwargs,
                            "severity": severity, "success": bool(r.success), "result": observed})
            result.n_expectations += 1
            if not r.success:
                line = f"{suite_name}: {cfg.type}({kwargs.get('column', 'table')}) observed {observed}"
                (result.failed if severity == "critical" else result.warnings).append(line)
    result.success = not result.failed
    if docs_dir is not None and (docs_dir / "index.html").exists():
        result.data_docs = (docs_dir / "index.html").resolve().as_uri()
    return details
