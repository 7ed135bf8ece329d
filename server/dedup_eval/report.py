"""The evaluation report: JSON for machines, a table for people, a precision-recall curve as a PNG."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: write files only
import matplotlib.pyplot as plt  # noqa: E402

from .falsealarm import FalseAlarmModel  # noqa: E402
from .metrics import Quality  # noqa: E402


def table(rows: Mapping[str, Quality]) -> str:
    """One column per system (e.g. service at its default, pHash); overall numbers, then recall per transform."""
    names = list(rows)
    transforms = sorted({t for q in rows.values() for t in q.recall_by_transform})
    width = max(14, *(len(n) + 2 for n in names))
    lines = ["".ljust(22) + "".join(n.rjust(width) for n in names)]

    def line(label: str, values: Sequence[str]) -> None:
        lines.append(label.ljust(22) + "".join(v.rjust(width) for v in values))

    line("threshold", [f"{q.threshold:.4f}" if q.threshold is not None else "-" for q in rows.values()])
    line("precision", [f"{q.precision:.4f}" for q in rows.values()])
    line("match precision", [f"{q.match_precision:.4f}" for q in rows.values()])
    line("recall", [f"{q.recall:.4f}" for q in rows.values()])
    line("F1", [f"{q.f1:.4f}" for q in rows.values()])
    line("copies / distractors", [f"{q.positives}/{q.distractor_queries}" for q in rows.values()])
    line("false alarms", [str(q.false_alarms) for q in rows.values()])
    line("wrong best matches", [str(q.wrong_matches) for q in rows.values()])
    line("wrong listed matches", [str(q.wrong_listed_matches) for q in rows.values()])
    lines.append("recall per transform:")
    for transform in transforms:
        line(f"  {transform}", [f"{q.recall_by_transform.get(transform, float('nan')):.3f}" for q in rows.values()])
    return "\n".join(lines)


def plot_curves(
    path: Path,
    curves: Mapping[str, Sequence[tuple[float, float, float]]],
    points: Mapping[str, tuple[float, float]],
    title: str,
) -> None:
    """curves: name -> [(threshold, precision, recall)]; points: name -> (precision, recall) operating points."""
    figure, axes = plt.subplots(figsize=(7, 5), dpi=120)
    for name, values in curves.items():
        axes.plot([r for _, _, r in values], [p for _, p, _ in values], label=name)
    for name, (precision, recall) in points.items():
        axes.scatter([recall], [precision], s=50, zorder=3, label=name)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_xlim(0, 1.01)
    axes.set_ylim(0, 1.01)
    axes.grid(True, alpha=0.3)
    axes.set_title(title, fontsize=10)
    axes.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_false_alarms(path: Path, model: FalseAlarmModel, measured: Mapping[int, float], title: str) -> None:
    """The modelled false-alarm rate per unrelated query (with its interval) against collection size, log-log,
    and the rates measured on sub-collections."""
    sizes = [10 ** (e / 4) for e in range(4, 33)]  # 10 .. 1e8
    rates = [model.at(n) for n in sizes]
    lows, highs = zip(*(model.interval(n) for n in sizes), strict=True)
    floor = 1e-7
    figure, axes = plt.subplots(figsize=(7, 5), dpi=120)
    axes.plot(sizes, [max(r, floor) for r in rates], label="model")
    axes.fill_between(sizes, [max(v, floor) for v in lows], [max(v, floor) for v in highs], alpha=0.25,
                      label="95 % interval")
    if measured:
        axes.scatter(list(measured), [max(v, floor) for v in measured.values()], zorder=3, color="black",
                     label=f"measured (0 drawn at {floor:g})")
    axes.axhline(0.01, color="grey", linestyle="--", linewidth=0.8, label="budget 1 %")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("indexed images")
    axes.set_ylabel("false alarms per unrelated query")
    axes.grid(True, alpha=0.3)
    axes.set_title(title, fontsize=10)
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_json(path: Path, payload: Mapping[str, object]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
