"""`make eval`: measure duplicate decisions through the real gRPC API on the benchmark, and optionally calibrate.

    python -m dedup_eval [--target HOST:PORT] [--out DIR] [--calibrate]

Without --target it starts its own stack (Milvus, Triton, front) on free ports. --calibrate chooses the model's
default threshold on the calibration split, measures it on the test split and writes both into
server/dedup_server/calibrations.json (restart the server to use it).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import logging
import pickle
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from dedup_client import DedupClient, StatsResult
from dedup_server.decision import to_verify
from dedup_server.index import Hit
from dedup_server.thresholds import CALIBRATIONS_PATH, CalibrationRecord, write_record
from dedup_server.verification.rule import VerificationRule

from . import calibrate, evidence, falsealarm, phash, ranking
from .benchmark import Split, make_splits
from .corpus import REPO_DIR, load_corpus
from .evidence import PairEvidence
from .metrics import (
    Quality,
    at_threshold,
    curve,
    quality,
    server_decision,
    server_decision_mirrors_distinct,
    sweep_grid,
    verified_decision,
)
from .report import plot_curves, plot_false_alarms, table, write_json
from .runner import QueryResult, run_split
from .transforms import MUST_FIND, TRANSFORMS

logger = logging.getLogger("dedup_eval")

# What CI holds the server's defaults to on the held-out test split (REQUIRE_TARGETS=1). The issue's targets are
# higher where these are not met yet (recall 0.99, the MUST_FIND edits 1.0, micro-AP 0.995): the run prints those
# misses too, and they stay open; the gates keep what is reached from regressing.
MIN_PRECISION = 0.998
MIN_RECALL = 0.98  # issue target 0.99
MIN_MUST_FIND = 0.98  # issue target 1.0, per edit
MIN_MICRO_AP = 0.99  # issue target 0.995
ISSUE_TARGETS = {"recall": 0.99, "must_find": 1.0, "micro_ap": 0.995}


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
    parser.add_argument("--reuse", action="store_true",
                        help="reuse the answers and evidence a previous run saved in --out (runs.pickle) instead of "
                             "querying the service again: to study calibration offline")
    parser.add_argument("--fresh-evidence", action="store_true",
                        help="with --reuse: compute the geometric evidence again (after a change of the features)")
    parser.add_argument("--require-targets", action="store_true",
                        help="exit 1 unless the server's default meets the targets on the test split (CI)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    photos = load_corpus(args.cache)
    splits = make_splits(photos)
    for split in splits.values():
        logger.info("%s split: %d indexed photos, %d distractor photos, %d queries", split.name, len(split.indexed),
                    len(split.distractors), len(split.queries))

    # The calibration split is only run to calibrate: without --calibrate the served calibration is measured. It
    # needs only raw similarities: its decisions are rebuilt here for every rule tried.
    names = list(splits) if args.calibrate else ["test"]
    saved = args.out / "runs.pickle"
    if args.reuse:
        stats, runs, tables = pickle.loads(saved.read_bytes())
        missing = [name for name in names if name not in runs]
        if missing:
            raise SystemExit(f"{saved} holds no {missing} split: run without --reuse first")
        if args.fresh_evidence:
            tables = {name: evidence.compute(splits[name], runs[name].results) for name in runs}
            saved.write_bytes(pickle.dumps((stats, runs, tables)))
    else:
        with (_service(args.target, args.out, args.model_repository) as target,
              DedupClient(target, timeout=120) as client):
            stats = client.stats()
            runs = {name: run_split(client, splits[name], concurrency=args.concurrency, decided=name == "test")
                    for name in names}
        tables = {name: evidence.compute(splits[name], runs[name].results) for name in names}
        saved.write_bytes(pickle.dumps((stats, runs, tables)))
    model = stats.model
    pairs = {name: falsealarm.unrelated_pairs(runs[name].results, runs[name].indexed) for name in names}
    baseline = phash.run_split(splits["test"])

    test_results = runs["test"].results
    calibration_results = runs["calibration"].results if args.calibrate else []
    default = stats.default_threshold
    served_rule = _served_rule(stats)
    chosen = (calibrate.choose(calibration_results, tables["calibration"], pairs["calibration"]) if args.calibrate
              else calibrate.Choice.served(default, served_rule or VerificationRule()))
    columns = {
        f"service default ({default:.3f})": quality(test_results, server_decision, threshold=default),
        f"calibrated, verified ({chosen.threshold:.3f})": quality(
            test_results, verified_decision(chosen.threshold, chosen.rule, tables["test"]), threshold=chosen.threshold),
        f"cosine alone ({chosen.threshold:.3f})": quality(
            test_results, at_threshold(chosen.threshold), threshold=chosen.threshold),
        "pHash <= 10": quality(baseline, server_decision, threshold=None),
    }
    official = next(iter(columns.values()))
    distinct = quality(test_results, server_decision_mirrors_distinct, threshold=default)
    mirrors_rejected = 1.0 - distinct.recall_by_transform.get("hflip", 1.0)
    others = [r for name, r in distinct.recall_by_transform.items() if name != "hflip"]
    unmirrored_kept = sum(others) / len(others) if others else 1.0

    # Ranking metrics of the server's own answers, and of the baseline.
    positives = official.positives
    served = ranking.predictions(test_results, [r.decided for r in test_results])
    hashed = ranking.predictions(baseline, [r.decided for r in baseline])
    ranks = {
        "service": {"micro_ap": ranking.micro_ap(served, positives),
                    "recall_at_precision_0.99": ranking.recall_at_precision(served, positives, 0.99),
                    "recall_at_precision_0.999": ranking.recall_at_precision(served, positives, 0.999)},
        "pHash": {"micro_ap": ranking.micro_ap(hashed, positives),
                  "recall_at_precision_0.99": ranking.recall_at_precision(hashed, positives, 0.99),
                  "recall_at_precision_0.999": ranking.recall_at_precision(hashed, positives, 0.999)},
    }

    # False alarms as the collection grows: measured on sub-collections of the test split, and modelled.
    test_split = splits["test"]
    rule_for_model = served_rule or chosen.rule
    threshold_for_model = default if served_rule else chosen.threshold
    lo, hi = threshold_for_model - rule_for_model.below, threshold_for_model + rule_for_model.above
    band_pairs, band_passed = _band_sample(test_results, tables["test"], rule_for_model, lo, hi,
                                           threshold_for_model)
    fa_model = falsealarm.model(pairs["test"], lo=lo, hi=hi, max_candidates=rule_for_model.max_candidates,
                                band_passed=band_passed, band_pairs=band_pairs)
    distractor_results = [r for r in test_results if r.expected is None]
    decide_within = _within(threshold_for_model, rule_for_model, tables["test"])
    sizes = [10, 100, 1000, len(test_split.indexed)]
    fa_measured = falsealarm.measured(distractor_results, [p.id for p in test_split.indexed], sorted(set(sizes)),
                                      decide_within)
    fa_at_1m = fa_model.at(1e6)
    needs_verification = sum(bool(to_verify_ids(r, threshold_for_model, rule_for_model)) for r in test_results) / max(
        1, len(test_results))
    bytes_per_image = _bytes_per_image(test_split, model.embedding_dim)

    text = "\n".join([
        f"model {model.name} (version {model.version}, fallback={model.fallback}); test split: "
        f"{runs['test'].indexed} indexed photos, {len(test_split.distractors)} distractor photos, "
        f"{len(test_results)} queries",
        f"server default threshold {default:.4f} ({stats.threshold_source}); verification band "
        f"[{default - (served_rule.below if served_rule else 0):.4f}, "
        f"{default + (served_rule.above if served_rule else 0):.4f})"
        + (f", >= {served_rule.min_inliers} inliers covering >= {served_rule.min_coverage:.1%}" if served_rule else ""),
        f"{'chosen on the calibration split' if args.calibrate else 'served'} (precision >= "
        f"{calibrate.MIN_PRECISION}, modelled false alarms at "
        f"{calibrate.BUDGET_SIZE:,} images <= {calibrate.BUDGET:.0%}): threshold {chosen.threshold:.4f}, band "
        f"[{chosen.lo:.3f}, {chosen.hi:.3f}), >= {chosen.rule.min_inliers} inliers, coverage >= "
        f"{chosen.rule.min_coverage:.1%}; calibration precision {chosen.precision:.4f}, recall {chosen.recall:.4f}",
        "",
        "TEST SPLIT (held out)",
        table(columns),
        "",
        f"micro-AP (one prediction per query): service {ranks['service']['micro_ap']:.4f}, pHash "
        f"{ranks['pHash']['micro_ap']:.4f}; recall at precision 0.99 / 0.999: service "
        f"{ranks['service']['recall_at_precision_0.99']:.4f} / {ranks['service']['recall_at_precision_0.999']:.4f}",
        "false alarms per distractor query, measured on sub-collections: "
        + ", ".join(f"{n}: {rate:.4f}" for n, rate in fa_measured.items()),
        f"modelled (p_hi {fa_model.p_hi:.2e}, p_band {fa_model.p_band:.2e}, q {fa_model.q:.4f} from "
        f"{band_passed}/{band_pairs} unrelated band pairs): "
        + ", ".join(f"{n:,}: {fa_model.at(n):.4f} [{fa_model.interval(n)[0]:.4f}, {fa_model.interval(n)[1]:.4f}]"
                    for n in (10, 100, 1000, 10**6, 10**8)),
        f"queries needing verification: {needs_verification:.1%}; bytes stored per image (median): {bytes_per_image}",
        f"flip_policy MIRROR_IS_DISTINCT (server default): mirrored copies rejected {mirrors_rejected:.3f}, other "
        f"copies still found {unmirrored_kept:.3f} (mean recall over transforms), false alarms {distinct.false_alarms}",
    ])
    grid = [float(t) for t in sweep_grid()]
    plot_curves(
        args.out / "pr_curve.png",
        {"cosine alone (test)": curve(test_results, grid),
         **({"cosine alone (calibration)": curve(calibration_results, grid)} if calibration_results else {}),
         "pHash Hamming (test)": curve(baseline, [1 - d / 64 for d in range(0, 33)])},
        {name: (q.precision, q.recall) for name, q in columns.items()},
        f"{model.name}: precision-recall on the held-out test split",
    )
    plot_false_alarms(args.out / "false_alarms.png", fa_model, fa_measured,
                      f"{model.name}: false alarms per unrelated query vs collection size")
    (args.out / "report.txt").write_text(text + "\n")
    report = {
        "model": {"name": model.name, "version": model.version, "fallback": model.fallback},
        "server_default_threshold": default,
        "threshold_source": stats.threshold_source,
        "calibrated": {"threshold": chosen.threshold, "band": [chosen.lo, chosen.hi],
                       "rule": dataclasses.asdict(chosen.rule), "calibration_precision": chosen.precision,
                       "calibration_recall": chosen.recall, "modelled_false_alarms_1m": chosen.false_alarm_1m,
                       "meets_budget": chosen.meets_budget, "budget": calibrate.BUDGET,
                       "budget_size": calibrate.BUDGET_SIZE, "min_precision": calibrate.MIN_PRECISION},
        "splits": {name: {"indexed": [p.id for p in s.indexed], "distractors": [p.id for p in s.distractors]}
                   for name, s in splits.items()},
        "test": {name: q.summary() for name, q in columns.items()},
        "ranking": ranks,
        "false_alarms": {"measured": {str(n): r for n, r in fa_measured.items()},
                         **fa_model.summary([10, 100, 1000, 10**6, 10**8])},
        "queries_needing_verification": needs_verification,
        "bytes_per_image": bytes_per_image,
        "test_mirrors_distinct": {"mirrored_copies_rejected": mirrors_rejected,
                                  "other_copies_found": unmirrored_kept, "quality": distinct.summary()},
        "raw_test": [
            {"id": r.id, "expected": r.expected, "decided": list(r.decided[:3]), "verified": r.verified,
             "candidates": [(c.id, round(c.similarity, 4)) for c in r.candidates[:5]]}
            for r in test_results
        ],
        "seconds": round(time.monotonic() - started, 1),
    }
    write_json(args.out / "report.json", report)
    if args.calibrate:
        measured = columns[f"calibrated, verified ({chosen.threshold:.3f})"]
        chosen_fa = falsealarm.model(
            pairs["test"], lo=chosen.lo, hi=chosen.hi, max_candidates=chosen.rule.max_candidates,
            **dict(zip(("band_pairs", "band_passed"),
                       _band_sample(test_results, tables["test"], chosen.rule, chosen.lo, chosen.hi,
                                    chosen.threshold), strict=True)))
        simulated = ranking.predictions(
            test_results, [verified_decision(chosen.threshold, chosen.rule, tables["test"])(r) for r in test_results])
        write_record(CalibrationRecord(
            model=model.name, model_version=model.version, threshold=chosen.threshold,
            dataset=(f"dedup-eval-v2 test split: {runs['test'].indexed} indexed photos x {len(TRANSFORMS)} edits, "
                     f"{measured.distractor_queries} distractor queries of {len(test_split.distractors)} photos; "
                     "chosen on the calibration split for <= 1 % false alarms at 1M images"),
            precision=measured.precision, recall=measured.recall, f1=measured.f1,
            match_precision=measured.match_precision, queries=measured.positives,
            distractor_queries=measured.distractor_queries, false_alarms=measured.false_alarms,
            measured_at=f"{datetime.date.today().isoformat()}, make eval CALIBRATE=1",
            verify_below=chosen.rule.below, verify_above=chosen.rule.above,
            verify_min_inliers=chosen.rule.min_inliers, verify_min_coverage=chosen.rule.min_coverage,
            verify_max_candidates=chosen.rule.max_candidates,
            false_alarm_rate_1m=chosen_fa.at(1e6), false_alarm_rate_1m_low=chosen_fa.interval(1e6)[0],
            false_alarm_rate_1m_high=chosen_fa.interval(1e6)[1],
            micro_ap=ranking.micro_ap(simulated, positives),
            recall_at_precision_99=ranking.recall_at_precision(simulated, positives, 0.99),
            recall_at_precision_999=ranking.recall_at_precision(simulated, positives, 0.999),
            bytes_per_image=bytes_per_image,
        ))
        logger.info("wrote %s: %s -> %.4f", CALIBRATIONS_PATH, model.name, chosen.threshold)
    print(text)
    print(f"report: {args.out / 'report.json'}, {args.out / 'report.txt'}, {args.out / 'pr_curve.png'}, "
          f"{args.out / 'false_alarms.png'}")
    for short in _short_of_issue(official, ranks["service"]["micro_ap"]):
        print(f"ISSUE TARGET NOT YET MET (not gated): {short}")
    if args.require_targets:
        misses = _missed_targets(official, ranks["service"]["micro_ap"], fa_at_1m)
        for miss in misses:
            print(f"TARGET MISSED: {miss}")
        return 1 if misses else 0
    return 0


def _served_rule(stats: StatsResult) -> VerificationRule | None:
    calibration = stats.calibration
    if calibration is None or not (calibration.verify_below or calibration.verify_above):
        return None
    # GetStats does not carry K (candidates verified per query): the calibration's own is the served one.
    return VerificationRule(below=calibration.verify_below, above=calibration.verify_above,
                            min_inliers=calibration.verify_min_inliers, min_coverage=calibration.verify_min_coverage,
                            max_candidates=calibrate.MAX_CANDIDATES)


def to_verify_ids(result: QueryResult, threshold: float, rule: VerificationRule) -> list[str]:
    hits = [Hit(id=c.id, similarity=c.similarity, metadata={}, framed=c.framed) for c in result.candidates]
    return to_verify(hits, threshold, rule)


def _band_sample(
    results: Sequence[QueryResult], table: Mapping[tuple[str, str], PairEvidence], rule: VerificationRule,
    lo: float, hi: float, threshold: float,
) -> tuple[int, int]:
    """(unrelated pairs in [lo, hi) with evidence, framed ones above it too, how many of them pass the rule): q's
    sample."""
    band = [(table[(r.id, c.id)], c) for r in results for c in r.candidates
            if c.id != r.expected and lo <= c.similarity and (c.similarity < hi or c.framed)
            and (r.id, c.id) in table]
    return len(band), sum(p.accepted(rule, c.similarity, threshold, framed=c.framed) for p, c in band)


def _within(
    threshold: float, rule: VerificationRule, table: Mapping[tuple[str, str], PairEvidence]
) -> Callable[[QueryResult, frozenset[str]], bool]:
    def decide_within(result: QueryResult, subset: frozenset[str]) -> bool:
        return bool(verified_decision(threshold, rule, table, within=subset)(result))
    return decide_within


def _bytes_per_image(split: Split, dim: int) -> int:
    """Median bytes one stored image costs in Milvus: the float32 vector, the signature, the layout, the id."""
    from dedup_server.decode import DecodeLimits, decode_with_thumbnail
    from dedup_server.verification import signature

    sizes = []
    for photo_id, data in split.originals:
        thumbnail = decode_with_thumbnail(data, DecodeLimits(), grey=True, thumbnail_side=signature.SIDE).thumbnail
        sizes.append(4 * dim + len(signature.make_signature(thumbnail)) + 344 + 8 + len(photo_id))
    return int(sorted(sizes)[len(sizes) // 2]) if sizes else 0


def _missed_targets(official: Quality, micro_ap: float, false_alarms_1m: float) -> list[str]:
    misses = []
    if micro_ap < MIN_MICRO_AP:
        misses.append(f"micro-AP {micro_ap:.4f} < {MIN_MICRO_AP}")
    if false_alarms_1m > calibrate.BUDGET:
        misses.append(f"modelled false alarms per query at 1M images {false_alarms_1m:.4f} > {calibrate.BUDGET}")
    if min(official.precision, official.match_precision) < MIN_PRECISION:
        misses.append(f"precision {official.precision:.4f} / match precision {official.match_precision:.4f} "
                      f"< {MIN_PRECISION}")
    if official.recall < MIN_RECALL:
        misses.append(f"recall {official.recall:.4f} < {MIN_RECALL}")
    for transform in sorted(MUST_FIND):
        recall = official.recall_by_transform.get(transform, 0.0)
        if recall < MIN_MUST_FIND:
            misses.append(f"recall of {transform} {recall:.4f} < {MIN_MUST_FIND}")
    return misses


def _short_of_issue(official: Quality, micro_ap: float) -> list[str]:
    short = []
    if official.recall < ISSUE_TARGETS["recall"]:
        short.append(f"recall {official.recall:.4f} < {ISSUE_TARGETS['recall']}")
    for transform in sorted(MUST_FIND):
        recall = official.recall_by_transform.get(transform, 0.0)
        if recall < ISSUE_TARGETS["must_find"]:
            short.append(f"recall of {transform} {recall:.4f} < {ISSUE_TARGETS['must_find']}")
    if micro_ap < ISSUE_TARGETS["micro_ap"]:
        short.append(f"micro-AP {micro_ap:.4f} < {ISSUE_TARGETS['micro_ap']}")
    return short


if __name__ == "__main__":
    sys.exit(main())
