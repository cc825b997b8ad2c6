"""A complete model card as Markdown (card.md) and as a standalone HTML page (card.html), both from the same
sections, escaped for where they are shown; `write_card` writes them beside card.json."""

from __future__ import annotations

import html
import json
from pathlib import Path

from mmops.atomic import write_atomic
from mmops.card.complete import CARD_HTML, CARD_JSON, CARD_MD, CompleteCard


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return str(int(v)) if float(v).is_integer() and abs(v) >= 1 else f"{v:.3f}"


def _sections(card: CompleteCard) -> list[tuple[str, list[str] | list[list[str]]]]:
    """(title, lines) or (title, table rows with a header row first)."""
    data = card.training_data
    approval = card.approval
    return [
        ("Model", [f"{card.domain} {card.task} model v{card.model_version or '-'} (checkpoint "
                   f"{card.checkpoint_sha256[:12]}, mmops {card.mmops_version})",
                   f"Classes: {', '.join(card.classes)}; modalities: {', '.join(card.modalities)}"]),
        ("Intended use", [card.intended_use, f"Intended users: {card.intended_users or '(not declared)'}"]),
        ("Training data", [f"Dataset version {data.dataset_version}; split counts " + ", ".join(
            f"{k} {v}" for k, v in data.split_counts.items()),
            f"{data.raw_files} raw files, sha256 of their hashes {data.raw_files_sha256}",
            *(["COMPOSED: records assembled from separate sources; the pairing across modalities is synthetic"]
              if data.composed else []),
            *(["NON-COMMERCIAL: trained on data licensed for non-commercial use only"]
              if data.non_commercial else []),
            *(f"Source: {s.line()}" for s in data.sources)]),
        ("Metrics (test split)", [["metric", "value"], *([k, _fmt(v)] for k, v in card.metrics.items())]),
        ("Per class", [["class", *next(iter(card.per_class.values()), {}).keys()],
                       *([c, *(_fmt(v) for v in row.values())] for c, row in card.per_class.items())]
         if card.per_class else ["(none: the task has no per-class figures)"]),
        ("Given only some modalities", [["modalities", "n", *(next(iter(card.subsets)).metrics.keys()
                                                              if card.subsets else [])],
                                        *(["+".join(s.modalities), str(s.n), *(_fmt(v) for v in s.metrics.values())]
                                          for s in card.subsets)]),
        ("Calibration", [f"isotonic maps after the temperature: {'yes' if v else 'no'}" if k == "isotonic"
                         else f"{k}: {_fmt(v)}" for k, v in card.calibration.items()] or ["(none)"]),
        ("Behaviour (test split)", _behaviour(card)),
        ("Known limitations", list(card.limitations) or ["(none declared)"]),
        ("Serving runtime", _runtime(card)),
        ("Approval", [f"{approval.decision} by {approval.by} at {approval.at}: {approval.reason}"]
         if approval else ["(not approved)"]),
    ]


def _runtime(card: CompleteCard) -> list[str]:
    r = card.runtime
    if r is None:
        return ["eager torch"]
    return [f"{r.runtime} (ONNX Runtime, {r.file}, {r.size_bytes / 1e6:.1f} MB; eager weights "
            f"{r.eager_size_bytes / 1e6:.1f} MB)",
            f"test {r.metric} {_fmt(r.compiled)} vs eager torch {_fmt(r.eager)} on {r.n} records (allowed within "
            f"{r.tolerance}); largest probability difference {r.max_probability_diff:.2g}"]


def _behaviour(card: CompleteCard) -> list[str]:
    b = card.behaviour
    if b is None:
        return ["(not measured: evaluated before mmops measured behaviour; run `mmops evaluate`)"]
    lines = [f"{m}, {b.nudges[m]}: {_fmt(share)} of {b.n} answers kept" for m, share in b.invariance.items()]
    lines.append(f"The field's shift of every modality (for scale): {_fmt(b.shift_kept)} of the answers kept")
    if b.clear_cases:
        lines.append(f"Clearest test cases of each class answered right: {b.clear_right} of {b.clear_cases}")
    if b.direction is not None:
        lines.append(f"A normal record blended into an anomalous one scores {' -> '.join(_fmt(s) for s in b.direction)}"
                     f" ({'rising at every step' if b.direction_holds else 'NOT rising at every step'}; "
                     "1.000 is the threshold)")
    return lines


def to_markdown(card: CompleteCard) -> str:
    out = [f"# Model card: {card.domain}", ""]
    for title, lines in _sections(card):
        out += [f"## {title}", ""]
        if lines and isinstance(lines[0], list):
            header, *rows = lines
            out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            out += ["| " + " | ".join(r) + " |" for r in rows]
        else:
            out += [f"- {line}" for line in lines]
        out.append("")
    return "\n".join(out)


def to_html(card: CompleteCard) -> str:
    e = html.escape
    body = [f"<h1>Model card: {e(card.domain)}</h1>"]
    for title, lines in _sections(card):
        body.append(f"<h2>{e(title)}</h2>")
        if lines and isinstance(lines[0], list):
            header, *rows = lines
            body.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
                        + "</table>")
        else:
            body.append("<ul>" + "".join(f"<li>{e(str(line))}</li>" for line in lines) + "</ul>")
    style = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Model card: {e(card.domain)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def write_card(card: CompleteCard, folder: Path) -> Path:
    """card.json, card.md and card.html in `folder`; returns card.json's path."""
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / CARD_MD, to_markdown(card))
    write_atomic(folder / CARD_HTML, to_html(card))
    path = folder / CARD_JSON
    write_atomic(path, json.dumps(card.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    return path
