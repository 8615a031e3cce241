"""The ``--report DIR`` of ``streamwise evaluate transactions``: PNG plots and one HTML page.

Five plots of the test week (ROC curves, precision-recall curves, card precision@100 per day,
alerts per day, score distributions) drawn with matplotlib's Agg backend (files only, no
display needed), and ``index.html`` with the metrics table and the plots.
"""

from __future__ import annotations

import html
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: render to files, never to a window

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure

from pipelines.fraud.offline.evaluate import GOAL, EvalScores

__all__ = ["PLOTS", "curves", "write_report"]

PLOTS = ("roc.png", "precision_recall.png", "card_precision.png", "alerts.png", "scores.png")
_MODELS = {"onnx": "ONNX LightGBM", "river": "River", "blend": "blend"}
FloatArray = npt.NDArray[np.float64]


def curves(y: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """False-positive rate, recall and precision at each distinct score, highest first.

    >>> fpr, tpr, precision = curves([0, 1, 1, 0], [0.1, 0.9, 0.4, 0.3])
    >>> fpr.tolist(), tpr.tolist(), precision.tolist()
    ([0.0, 0.0, 0.5, 1.0], [0.5, 1.0, 1.0, 1.0], [1.0, 1.0, 0.6666666666666666, 0.5])
    """
    truth = np.asarray(y).astype(np.float64)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    ranked = s[order]
    last = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
    tp = np.cumsum(truth[order])[last]
    fp = (last + 1) - tp
    return fp / max(fp[-1], 1.0), tp / max(tp[-1], 1.0), tp / (last + 1)


def _figure() -> tuple[Figure, Any]:
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    return fig, ax


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _plot_curves(ev: EvalScores, report: dict[str, Any], out: Path) -> None:
    fig, ax = _figure()
    for key, label in _MODELS.items():
        fpr, tpr, _ = curves(ev.y, ev.scores[key])
        auc = report["models"][key]["roc_auc"]
        ax.plot(np.r_[0.0, fpr], np.r_[0.0, tpr], label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    ax.set(
        xlabel="false positive rate", ylabel="true positive rate (recall)", title="ROC, test week"
    )
    ax.legend(loc="lower right")
    _save(fig, out / "roc.png")
    fig, ax = _figure()
    for key, label in _MODELS.items():
        _, recall, precision = curves(ev.y, ev.scores[key])
        ap = report["models"][key]["average_precision"]
        ax.step(
            np.r_[0.0, recall], np.r_[1.0, precision], where="post", label=f"{label} (AP {ap:.3f})"
        )
    ax.axhline(float(ev.y.mean()), color="grey", linestyle=":", label="chance (fraud rate)")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall, test week", ylim=(0, 1.02))
    ax.legend(loc="upper right")
    _save(fig, out / "precision_recall.png")


def _days(report: dict[str, Any]) -> list[str]:
    start = date.fromisoformat(report["test"]["start"])
    return [str(start + timedelta(days=d))[5:] for d in range(report["test"]["days"])]


def _plot_days(report: dict[str, Any], out: Path) -> None:
    days = _days(report)
    fig, ax = _figure()
    for key, label in _MODELS.items():
        per_day = report["models"][key]["card_precision_per_day"]
        ax.plot(days[: len(per_day)], per_day, marker="o", label=label)
    ax.axhline(GOAL["card_precision_at_100"], color="grey", linestyle="--", label="goal (mean)")
    ax.set(xlabel="test day", ylabel="card precision@100", title="Card precision@100 per day")
    ax.set_ylim(bottom=0)
    ax.legend()
    _save(fig, out / "card_precision.png")
    fig, ax = _figure()
    rows = report["alerts_per_day"]
    where = np.arange(len(rows))
    ax.bar(where - 0.2, [r["alerts"] for r in rows], width=0.4, label="alerts")
    ax.bar(where + 0.2, [r["true_alerts"] for r in rows], width=0.4, label="alerts on a fraud")
    ax.plot(where, [r["frauds"] for r in rows], color="black", marker="o", label="frauds")
    ax.set_xticks(where, [r["day"][5:] for r in rows])
    threshold = report["alert_threshold"]
    ax.set(
        xlabel="test day", ylabel="transactions", title=f"Alerts per day (score >= {threshold:g})"
    )
    top = max([r["alerts"] for r in rows] + [r["frauds"] for r in rows] + [1])
    ax.set_ylim(0, top * 1.3)  # room for the legend above the bars
    ax.legend(loc="upper center", ncol=3)
    _save(fig, out / "alerts.png")


def _plot_scores(ev: EvalScores, out: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), dpi=100, sharey=True)
    bins = np.linspace(0.0, 1.0, 41)
    fraud = ev.y == 1
    for ax, (key, label) in zip(axes, _MODELS.items(), strict=True):
        s = ev.scores[key]
        ax.hist(s[~fraud], bins=bins, alpha=0.6, label="genuine", density=True)
        ax.hist(s[fraud], bins=bins, alpha=0.6, label="fraud", density=True)
        ax.set(title=label, xlabel="score", yscale="log")
    axes[0].set_ylabel("density (log)")
    axes[0].legend()
    _save(fig, out / "scores.png")


_METRICS = ("roc_auc", "average_precision", "card_precision_at_100")


def _html(report: dict[str, Any]) -> str:
    def row(label: str, m: dict[str, float], cell: str = "td") -> str:
        values = (label, *(f"{m[k]:.3f}" for k in _METRICS))
        return "<tr>" + "".join(f"<{cell}>{v}</{cell}>" for v in values) + "</tr>"

    rows = [row(html.escape(key), m) for key, m in report["models"].items()]
    rows += [row(f"handbook: {html.escape(n)}", m) for n, m in report["handbook"].items()]
    rows.append(row("goal", report["goal"], "th"))
    t = report["test"]
    images = "\n".join(f'<p><img src="{name}" alt="{name}"></p>' for name in PLOTS)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>streamwise fraud evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:0.2em 0.8em;text-align:right}}
td:first-child{{text-align:left}}</style></head><body>
<h1>Fraud detection, protocol {html.escape(report["protocol"])}</h1>
<p>Test week {t["start"]} (+{t["days"]} days), {t["rows"]:,} transactions, fraud rate
{report["test_fraud_rate"]:.3%}. Models {html.escape(str(report["versions"]))}, blend weight
{report["river_weight"]:g}. Goal {"met" if report["goal_met"] else "not met"} by
{html.escape(report["scoring"])}.</p>
<table><tr><th>model</th><th>AUC ROC</th><th>AP</th><th>Card P@100</th></tr>
{chr(10).join(rows)}
</table>
{images}
</body></html>
"""


def write_report(report: dict[str, Any], ev: EvalScores, out: Path) -> Path:
    """Write the plots and ``index.html`` into ``out`` (created); the page's path."""
    out.mkdir(parents=True, exist_ok=True)
    _plot_curves(ev, report, out)
    _plot_days(report, out)
    _plot_scores(ev, out)
    page = out / "index.html"
    page.write_text(_html(report), encoding="utf-8")
    return page
