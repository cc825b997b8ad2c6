"""Explanations a person looks at: one figure per record (each modality's input with its map over it) and the
evaluation report's explanations page (artifacts/<domain>/explanations/index.html): the test records the
model was surest of and least sure of, each with its answer, the modalities' Shapley values and the maps.

Text is shown as the tokens the model read, each passed through the PHI redactor (stored text was already
redacted at ingest where the pack asks); records are named by their keys, never by file names.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmops.phi import redact_text

CMAP = "RdBu_r"  # red: towards the explained answer; blue: against it


def confidence(outputs: np.ndarray) -> np.ndarray:
    """How sure the model was of each record: a classifier's top probability, a detector's score."""
    out = np.asarray(outputs, dtype=np.float64)
    return out.max(axis=1) if out.ndim == 2 else out


def picks(outputs: np.ndarray, per_side: int) -> list[tuple[str, int]]:
    """(surest | least sure, record index): per_side of each, never the same record twice."""
    order = [int(i) for i in np.argsort(-np.nan_to_num(confidence(outputs), nan=-np.inf), kind="stable")]
    top = order[:per_side]
    bottom = [i for i in reversed(order) if i not in top][:per_side]
    return [("surest", i) for i in top] + [("least sure", i) for i in bottom]


def write_page(task: Any, predictor: Any, rows: Sequence[Mapping[str, Any]], values: list[dict[str, Any]],
               outputs: np.ndarray, title: str, out_dir: Path, per_side: int) -> Path | None:
    """The explanations page and its figures in out_dir (rewritten whole); None when per_side is 0."""
    import shutil

    if per_side <= 0 or not values:
        return None
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    chosen = picks(outputs, per_side)
    explained = task.explain(predictor, [values[i] for _, i in chosen])
    sections = []
    for (side, i), e in zip(chosen, explained, strict=True):
        key = str(rows[i].get("key", i))
        figure(predictor.pack, values[i], e, out_dir / f"{_slug(key)}.png", f"{key}: {e['explained']} {e['value']:.3f}")
        sections.append(_section(side, key, rows[i].get("label"), e, f"{_slug(key)}.png"))
    (out_dir / "explanations.json").write_text(json.dumps(
        [{"record": str(rows[i].get("key", i)), "side": side, **e} for (side, i), e in zip(chosen, explained,
                                                                                          strict=True)]),
        encoding="utf-8")
    page = out_dir / "index.html"
    page.write_text(_page(title, sections), encoding="utf-8")
    return page


def figure(pack: Any, value: dict[str, Any], explanation: dict[str, Any], path: Path, title: str) -> None:
    """One row of panels per modality with a map (text is shown on the page, as tokens)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [m for m, d in explanation["modalities"].items() if d.get("units") is None]
    fig, axes = plt.subplots(max(len(shown), 1), 2, figsize=(10, 2.6 * max(len(shown), 1)), squeeze=False)
    for row, m in zip(axes, shown, strict=False):
        d = explanation["modalities"][m]
        spec = pack.modality(m)
        row[0].set_title(f"{m} (Shapley {d['shapley']:+.3f})", fontsize=9)
        if d.get("views") is not None:
            _anomaly_panels(row, spec, value.get(m), d["views"])
        else:
            _attribution_panels(row, spec, value.get(m), d)
    for ax in axes.flat:
        if not ax.has_data() and not ax.images:
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _attribution_panels(row: Any, spec: Any, raw: Any, d: dict[str, Any]) -> None:
    a = np.asarray(d.get("attribution") or [], dtype=np.float64)
    lim = float(np.abs(a).max()) or 1.0
    if spec.kind == "sensor" and raw is not None and a.ndim == 2:
        series = np.asarray(raw, dtype=np.float64)
        for c in range(min(series.shape[1], a.shape[0])):
            row[0].plot(series[:, c], linewidth=0.8, label=(d.get("channels") or [str(c)] * (c + 1))[c])
        low, high = row[0].get_ylim()
        row[0].imshow(a.sum(axis=0, keepdims=True), aspect="auto", cmap=CMAP, vmin=-lim, vmax=lim, alpha=0.35,
                      extent=(0, series.shape[0], low, high))
        row[0].legend(fontsize=7, loc="upper right")
        row[1].imshow(a, aspect="auto", cmap=CMAP, vmin=-lim, vmax=lim)
        row[1].set_yticks(range(a.shape[0]), d.get("channels") or [str(c) for c in range(a.shape[0])])
        row[1].set_title("integrated gradients: channel x time", fontsize=9)
    elif spec.kind == "image" and raw is not None:
        img = np.asarray(raw)
        row[0].imshow(img.squeeze(), cmap="gray" if img.ndim == 2 or img.shape[-1] == 1 else None)
        row[0].imshow(a, cmap=CMAP, vmin=-lim, vmax=lim, alpha=0.5, extent=(0, img.shape[1], img.shape[0], 0))
        cam = np.asarray(d.get("grad_cam") or a, dtype=np.float64)
        row[1].imshow(img.squeeze(), cmap="gray" if img.ndim == 2 or img.shape[-1] == 1 else None)
        row[1].imshow(cam, cmap="inferno", alpha=0.5, extent=(0, img.shape[1], img.shape[0], 0))
        row[1].set_title("Grad-CAM" if d.get("grad_cam") is not None else "integrated gradients", fontsize=9)
    elif a.ndim == 3:  # a clip: frames x h x w
        row[0].imshow(a.sum(axis=0), cmap=CMAP, vmin=-lim, vmax=lim)
        row[1].bar(range(a.shape[0]), a.sum(axis=(1, 2)))
        row[1].set_title("per frame", fontsize=9)
    elif a.ndim == 2:  # audio: mels x frames
        row[0].imshow(a, aspect="auto", origin="lower", cmap=CMAP, vmin=-lim, vmax=lim)
        row[1].plot(a.sum(axis=0))
        row[1].set_title("over time", fontsize=9)


def _anomaly_panels(row: Any, spec: Any, raw: Any, views: dict[str, Any]) -> None:
    for ax, (name, view) in zip(row, views.items(), strict=False):
        a = np.asarray(view.get("attribution") or [], dtype=np.float64)
        ax.set_title(f"{name}: {view['layout']} (1 = threshold)", fontsize=9)
        if a.ndim == 2 and spec.kind == "image" and raw is not None:
            img = np.asarray(raw)
            ax.imshow(img.squeeze(), cmap="gray" if img.ndim == 2 or img.shape[-1] == 1 else None)
            ax.imshow(a, cmap="inferno", alpha=0.5, vmin=0, extent=(0, img.shape[1], img.shape[0], 0))
        elif a.ndim == 3:
            ax.plot(a.reshape(len(a), -1).max(axis=1), marker=".")
            ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
        elif a.size:
            ax.plot(a.ravel(), marker="." if a.size < 50 else None)
            ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)


def tokens_html(units: list[str], attribution: list[float]) -> str:
    """Tokens shaded by their attribution (red: towards the answer), each redacted of PHI."""
    lim = max((abs(a) for a in attribution), default=0.0) or 1.0
    spans = []
    for token, a in zip(units, attribution, strict=False):
        shade = int(255 * (1 - min(abs(a) / lim, 1.0)))
        colour = f"rgb(255,{shade},{shade})" if a >= 0 else f"rgb({shade},{shade},255)"
        spans.append(f'<span style="background:{colour}" title="{a:+.4f}">'
                     f"{html.escape(redact_text(token)[0])}</span>")
    return " ".join(spans)


def _section(side: str, key: str, label: Any, e: dict[str, Any], image: str) -> str:
    def error(d: dict[str, Any]) -> str:
        return "" if d.get("completeness_error") is None else f"{d['completeness_error']:.4f}"

    rows = "".join(f"<tr><td>{html.escape(m)}</td><td>{d['shapley']:+.4f}</td>"
                   f"<td>{html.escape(str(d.get('method', '')))}</td><td>{error(d)}</td></tr>"
                   for m, d in e["modalities"].items())
    texts = "".join(f"<p><b>{html.escape(m)}</b>: {tokens_html(d['units'], d['attribution'])}</p>"
                    for m, d in e["modalities"].items() if d.get("units") is not None)
    answer = e["label"] if e.get("label") is not None else ""
    return (f"<section><h2>{html.escape(key)} <small>({side})</small></h2>"
            f"<p>labeled <b>{html.escape(str(label))}</b>; {html.escape(e['explained'])} "
            f"<b>{e['value']:.4f}</b> {html.escape(str(answer))} (with no modality: {e['base']:.4f})</p>"
            f"<table><tr><th>modality</th><th>Shapley</th><th>map</th><th>completeness error</th></tr>{rows}"
            f"</table>{texts}<img src=\"{html.escape(image)}\" alt=\"maps of {html.escape(key)}\"></section>")


def _page(title: str, sections: list[str]) -> str:
    return ("<!doctype html><html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}: explanations</title><style>body{{font-family:sans-serif;max-width:1000px;"
            "margin:auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}"
            "img{max-width:100%}</style></head><body>"
            f"<h1>{html.escape(title)}: why the model answered as it did</h1>"
            "<p>Test records the model was surest of and least sure of. Shapley: each modality's share of the "
            "answer above what the model says with no input (they sum to it). Maps: integrated gradients from the "
            "blurred input (red: towards the answer, blue: against), Grad-CAM for images, token occlusion for "
            "text; for an anomaly detector, each patch's or window's distance to normal (1 = threshold).</p>"
            + "".join(sections) + "</body></html>")


def _slug(key: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key)[:80] or "record"
