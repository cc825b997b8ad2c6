"""An anomaly model's evaluation plots: the score histograms of normal and anomalous test records with the
threshold, the ROC curve and the precision-recall curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot_anomaly(metrics: dict[str, Any], is_anomaly: np.ndarray, scores: np.ndarray, title: str,
                 out_dir: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"scores": out_dir / "anomaly_scores.png", "roc": out_dir / "roc.png", "pr": out_dir / "pr.png"}
    ok = ~np.isnan(scores)
    y, s = is_anomaly[ok], scores[ok]

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0.0, max(2.0, float(np.percentile(s, 99))) if len(s) else 2.0, 40).tolist()
    ax.hist(np.clip(s[~y], 0, bins[-1]), bins=bins, alpha=0.6, label=f"normal ({int((~y).sum())})")
    ax.hist(np.clip(s[y], 0, bins[-1]), bins=bins, alpha=0.6, label=f"anomalous ({int(y.sum())})")
    ax.axvline(1.0, color="black", linestyle="--", label=f"threshold (FPR target, realized {_pct(metrics['fpr'])})")
    ax.set_xlabel("anomaly score (1 = threshold)")
    ax.set_ylabel("test records")
    ax.set_title(f"{title}: test scores")
    ax.legend(fontsize=8, framealpha=0.7)
    _save(fig, paths["scores"])

    both = bool(y.any() and (~y).any())
    for key, label in (("roc", "AUROC"), ("pr", "AUPRC")):
        fig, ax = plt.subplots(figsize=(5, 4.5))
        if both:
            if key == "roc":
                fpr, tpr, _ = roc_curve(y, s)
                ax.plot(fpr, tpr)
                ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
                ax.set_xlabel("false positive rate")
                ax.set_ylabel("true positive rate")
            else:
                precision, recall, _ = precision_recall_curve(y, s)
                ax.plot(recall, precision)
                ax.axhline(y.mean(), linestyle=":", color="grey")
                ax.set_xlabel("recall")
                ax.set_ylabel("precision")
            value = metrics["auroc" if key == "roc" else "auprc"]
            ax.set_title(f"{title}: test {label} {value:.3f}")
        else:
            ax.set_title(f"{title}: no {'anomalous' if not y.any() else 'normal'} test records, no {label}")
        _save(fig, paths[key])
    return {k: str(v) for k, v in paths.items()}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
