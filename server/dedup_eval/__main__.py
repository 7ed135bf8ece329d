"""`make eval`: measure duplicate decisions through the real gRPC API on the benchmark, and optionally calibrate.

    python -m dedup_eval [--target HOST:PORT] [--out DIR] [--calibrate]

Without --target it starts its own stack (Milvus, Triton, front) on free ports. --calibrate chooses the model's
default threshold on the calibration split, measures it on the test split and writes both into
server/dedup_server/calibrations.json (restart the server to use it).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from dedup_client import DedupClient
from dedup_server.thresholds import CALIBRATIONS_PATH, CalibrationRecord, write_record

from . import phash
from .benchmark import make_splits
from .corpus import REPO_DIR, load_corpus
from .metrics import (
    Quality,
    at_threshold,
    choose_threshold,
    curve,
    quality,
    server_decision,
    server_decision_mirrors_distinct,
    sweep_grid,
)
from .report import plot_curves, table, write_json
from .runner import run_split
from .transforms import MUST_FIND

logger = logging.getLogger("dedup_eval")

MIN_PRECISION = 0.995  # the target the threshold is chosen for (on the calibration split)
MIN_RECALL = 0.985  # overall, on the test split; the MUST_FIND transforms need 1.0


@contextlib.contextmanager
def _service(target: str | None, work_dir: Path, model_repository: Path) -> Iterator[str]:
    if target:
        yield target
        return
    from dedup_stack.ephemeral import ephemeral_stack

    with ephemeral_stack(work_dir / "stack", model_repository=model_repository) as stack:
        yield stack.target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dedup_eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", help="a running front (host:port); default: start a stack on free ports")
    parser.add_argument("--out", type=Path, default=REPO_DIR / ".dedup-data" / "eval",
                        help="where report.json, report.txt and pr_curve.png go")
    parser.add_argument("--cache", type=Path, default=REPO_DIR / ".dedup-data" / "eval-cache",
                        help="where the Debian photo packages are unpacked")
    parser.add_argument("--calibrate", action="store_true",
                        help=f"choose the default threshold on the calibration split; write {CALIBRATIONS_PATH.name}")
    parser.add_argument("--model-repository", type=Path, default=REPO_DIR / "triton_models",
                        help="the Triton model repository the started stack serves (e.g. an FP32 build to compare)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--require-targets", action="store_true",
                        help="exit 1 unless the server's default meets the targets on the test split (CI)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    photos = load_corpus(args.cache)
    splits = make_splits(photos)
    for split in splits.values():
        logger.info("%s split: %d indexed photos, %d distractor photos", split.name, len(split.indexed),
                    len(split.distractors))

    with _service(args.target, args.out, args.model_repository) as target, DedupClient(target, timeout=120) as client:
        stats = client.stats()
        runs = {name: run_split(client, split, concurrency=args.concurrency) for name, split in splits.items()}
    model = stats.model
    baseline = {name: phash.run_split(split) for name, split in splits.items()}

    calibration_results, test_results = runs["calibration"].results, runs["test"].results
    chosen = choose_threshold(calibration_results, min_precision=MIN_PRECISION)
    columns = {
        f"service default ({stats.default_threshold:.3f})": quality(
            test_results, server_decision, threshold=stats.default_threshold),
        f"cosine at calibrated {chosen:.3f}": quality(test_results, at_threshold(chosen), threshold=chosen),
        "pHash <= 10": quality(baseline["test"], server_decision, threshold=None),
    }
    calibration_quality = quality(calibration_results, at_threshold(chosen), threshold=chosen)
    distinct = quality(test_results, server_decision_mirrors_distinct, threshold=stats.default_threshold)
    mirrors_rejected = 1.0 - distinct.recall_by_transform.get("hflip", 1.0)
    others = [r for name, r in distinct.recall_by_transform.items() if name != "hflip"]
    unmirrored_kept = sum(others) / len(others) if others else 1.0
    text = "\n".join([
        f"model {model.name} (version {model.version}, fallback={model.fallback}); test split: "
        f"{runs['test'].indexed} indexed photos",
        f"server default threshold {stats.default_threshold:.4f} ({stats.threshold_source})",
        f"threshold chosen on the calibration split (precision >= {MIN_PRECISION}): {chosen:.4f} "
        f"(calibration split: precision {calibration_quality.precision:.4f}, recall {calibration_quality.recall:.4f})",
        "",
        "TEST SPLIT (held out)",
        table(columns),
        "",
        f"flip_policy MIRROR_IS_DISTINCT (test split, server default threshold): mirrored copies rejected "
        f"{mirrors_rejected:.3f}, other copies still found {unmirrored_kept:.3f} (mean recall over transforms), "
        f"false alarms {distinct.false_alarms}",
    ])
    grid = [float(t) for t in sweep_grid()]
    plot_curves(
        args.out / "pr_curve.png",
        {"service cosine (test)": curve(test_results, grid),
         "service cosine (calibration)": curve(calibration_results, grid),
         "pHash Hamming (test)": curve(baseline["test"], [1 - d / 64 for d in range(0, 33)])},
        {name: (q.precision, q.recall) for name, q in columns.items()},
        f"{model.name}: precision-recall on the held-out test split",
    )
    (args.out / "report.txt").write_text(text + "\n")
    report = {
        "model": {"name": model.name, "version": model.version, "fallback": model.fallback},
        "server_default_threshold": stats.default_threshold,
        "threshold_source": stats.threshold_source,
        "calibrated_threshold": chosen,
        "min_precision": MIN_PRECISION,
        "splits": {name: {"indexed": [p.id for p in s.indexed], "distractors": [p.id for p in s.distractors]}
                   for name, s in splits.items()},
        "calibration_split_at_calibrated": calibration_quality.summary(),
        "test": {name: q.summary() for name, q in columns.items()},
        "test_mirrors_distinct": {"mirrored_copies_rejected": mirrors_rejected,
                                  "other_copies_found": unmirrored_kept, "quality": distinct.summary()},
        "raw_test": [
            {"id": r.id, "expected": r.expected, "candidates": [(c.id, round(c.similarity, 4)) for c in r.candidates]}
            for r in test_results
        ],
        "seconds": round(time.monotonic() - started, 1),
    }
    write_json(args.out / "report.json", report)
    if args.calibrate:
        measured = columns[f"cosine at calibrated {chosen:.3f}"]
        write_record(CalibrationRecord(
            model=model.name, model_version=model.version, threshold=chosen,
            dataset=(f"dedup-eval-v1 test split: {runs['test'].indexed} indexed photos x 15 transforms, "
                     f"{measured.distractor_queries} distractor queries; threshold chosen on the calibration split"),
            precision=measured.precision, recall=measured.recall, f1=measured.f1,
            match_precision=measured.match_precision, queries=measured.positives,
            distractor_queries=measured.distractor_queries, false_alarms=measured.false_alarms,
            measured_at=f"{datetime.date.today().isoformat()}, make eval CALIBRATE=1",
        ))
        logger.info("wrote %s: %s -> %.4f", CALIBRATIONS_PATH, model.name, chosen)
    print(text)
    print(f"report: {args.out / 'report.json'}, {args.out / 'report.txt'}, {args.out / 'pr_curve.png'}")
    if args.require_targets:
        official = next(iter(columns.values()))
        misses = _missed_targets(official)
        for miss in misses:
            print(f"TARGET MISSED: {miss}")
        return 1 if misses else 0
    return 0


def _missed_targets(official: Quality) -> list[str]:
    misses = []
    if min(official.precision, official.match_precision) < MIN_PRECISION:
        misses.append(f"precision {official.precision:.4f} / match precision {official.match_precision:.4f} "
                      f"< {MIN_PRECISION}")
    if official.recall < MIN_RECALL:
        misses.append(f"recall {official.recall:.4f} < {MIN_RECALL}")
    for transform in sorted(MUST_FIND):
        recall = official.recall_by_transform.get(transform, 0.0)
        if recall < 1.0:
            misses.append(f"recall of {transform} {recall:.4f} < 1.0")
    return misses


if __name__ == "__main__":
    sys.exit(main())
