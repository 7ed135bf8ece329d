"""The CLI's commands: each takes a client and typed options, prints, returns an exit code.

Nothing here parses arguments (cli.py does) or maps gRPC errors (client.py does).
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .client import DedupClient
from .errors import DedupError
from .files import (
    IdMode,
    ImageFile,
    colliding_ids,
    find_images,
    image_id,
    iter_index_items,
)
from .results import DuplicateGroup, FlipPolicy, IndexInfo, IndexResult, IndexStatus, ScanProgress, StatsResult
from .summary import IndexSummary

EXIT_OK = 0
EXIT_ITEMS_FAILED = 1
EXIT_ERROR = 2


class UsageError(Exception):
    """Bad input found after parsing (missing folder, colliding ids): exit code 2."""


@dataclass(frozen=True)
class IndexOptions:
    root: Path
    recursive: bool
    skip_duplicates: bool
    threshold: float
    id_mode: IdMode
    extensions: frozenset[str]
    collection: str


@dataclass(frozen=True)
class CheckOptions:
    file: Path
    threshold: float
    top_k: int
    insert: bool
    id: str
    collection: str
    flip_policy: FlipPolicy = FlipPolicy.DEFAULT


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, IndexStatus):
        return value.name
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# -- index -----------------------------------------------------------------------------------


def run_index(client: DedupClient, opts: IndexOptions, *, as_json: bool) -> int:
    if not opts.root.is_dir():
        raise UsageError(f"{opts.root} is not a folder")
    listing = find_images(opts.root, recursive=opts.recursive, extensions=opts.extensions)
    for problem in listing.errors:
        print(f"warning: cannot list {problem}", file=sys.stderr)
    collisions = colliding_ids(listing.files, opts.id_mode)
    if collisions:
        example, paths = next(iter(collisions.items()))
        raise UsageError(
            f"{len(collisions)} ids are shared by several files (e.g. {example!r}: "
            f"{', '.join(paths)}); use --id-mode relative"
        )

    summary = IndexSummary(path_of={image_id(f, opts.id_mode): f.relative for f in listing.files})
    # Filled on gRPC's request thread, drained on this one, so all printing stays here.
    read_failures: deque[IndexResult] = deque()

    def on_read_error(image: ImageFile, exc: OSError) -> None:
        read_failures.append(
            IndexResult(
                id=image_id(image, opts.id_mode),
                status=IndexStatus.FAILED,
                error=f"cannot read file: {exc.strerror or exc}",
            )
        )

    items = iter_index_items(
        listing.files,
        id_mode=opts.id_mode,
        on_read_error=on_read_error,
        collection=opts.collection,
        skip_duplicates=opts.skip_duplicates,
        threshold=opts.threshold,
    )
    show_bar = not as_json and sys.stderr.isatty()
    started = time.monotonic()
    with tqdm(total=len(listing.files), unit="img", disable=not show_bar, file=sys.stderr) as bar:

        def drain_local() -> None:
            while read_failures:
                summary.add(read_failures.popleft(), local=True)
                bar.update(1)

        try:
            for result in client.index(items):
                summary.add(result)
                bar.update(1)
                drain_local()
        except DedupError:
            drain_local()
            summary.elapsed_s = time.monotonic() - started
            if summary.total:
                print(f"stream stopped after {summary.total} of {len(listing.files)} files:")
                print(summary.to_text())
            raise
        drain_local()
    summary.add_unanswered()
    summary.elapsed_s = time.monotonic() - started

    if as_json:
        _print_json(summary.to_json())
    else:
        print(summary.to_text())
    return EXIT_OK if summary.ok else EXIT_ITEMS_FAILED


# -- check -----------------------------------------------------------------------------------


def run_check(client: DedupClient, opts: CheckOptions, *, as_json: bool) -> int:
    try:
        image = opts.file.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {opts.file}: {exc.strerror or exc}") from exc
    result = client.check(
        image,
        collection=opts.collection,
        threshold=opts.threshold,
        top_k=opts.top_k,
        insert_if_unique=opts.insert,
        id=opts.id,
        metadata={"path": opts.file.name} if opts.insert else None,
        flip_policy=opts.flip_policy,
    )
    if as_json:
        _print_json(asdict(result))
        return EXIT_OK
    print(f"duplicate: {'yes' if result.is_duplicate else 'no'}")
    if result.matches:
        print("matches:")
        for match in result.matches:
            meta = " ".join(f"{k}={v}" for k, v in sorted(match.metadata.items()))
            mirrored = "  (mirrored)" if match.mirrored else ""
            verified = f"  (verified: {match.inliers} inliers)" if match.verified else ""
            print(f"  {match.id}  {match.similarity:.4f}{mirrored}{verified}  {meta}".rstrip())
    if opts.insert:
        print(f"inserted: {'yes' if result.inserted else 'no'} (id {opts.id})")
    print(f"model: {result.model}")
    print(f"threshold: {result.threshold:.4f}")
    return EXIT_OK


# -- stats -----------------------------------------------------------------------------------


def _format_params(params: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "-"


def _format_index(index: IndexInfo) -> str:
    return (
        f"{index.index_type or '?'} metric={index.metric or '?'} "
        f"build[{_format_params(index.build_params)}] "
        f"search[{_format_params(index.search_params)}]"
    )


def _fallback_warning(stats: StatsResult) -> str:
    return (
        f"WARNING: the server embeds with a fallback model ({stats.model.name}), "
        f"not the production one: {stats.model.warning or 'no reason given'}"
    )


def run_stats(client: DedupClient, collection: str, *, as_json: bool) -> int:
    stats = client.stats(collection=collection)
    if as_json:
        # The warning still reaches a person watching the terminal; stdout stays pure JSON.
        if stats.model.fallback:
            print(_fallback_warning(stats), file=sys.stderr)
        _print_json(asdict(stats))
        return EXIT_OK
    model = stats.model
    print(f"model: {model.name} (version {model.version or '?'}, dim {model.embedding_dim})")
    if model.fallback:
        print(_fallback_warning(stats))
    print(
        f"default threshold: {stats.default_threshold:.4f} "
        f"(source: {stats.threshold_source or 'unknown'})"
    )
    if stats.calibration is not None:
        measured = stats.calibration
        print(
            f"  measured at it: precision {measured.precision:.4f}, match precision "
            f"{measured.match_precision:.4f}, recall {measured.recall:.4f} on {measured.queries} copies + "
            f"{measured.distractor_queries} distractor queries ({measured.false_alarms} false alarms); "
            f"{measured.measured_at}"
        )
        if measured.verify_below or measured.verify_above:
            print(
                f"  geometric verification for similarities in [{stats.default_threshold - measured.verify_below:.4f}, "
                f"{stats.default_threshold + measured.verify_above:.4f}): at least {measured.verify_min_inliers} "
                f"inliers covering {measured.verify_min_coverage:.0%} of both images"
            )
        if measured.false_alarm_rate_1m:
            print(
                f"  expected false-alarm rate per query at 1M images: {measured.false_alarm_rate_1m:.2%} "
                f"(95 % interval {measured.false_alarm_rate_1m_low:.2%}-{measured.false_alarm_rate_1m_high:.2%}); "
                f"micro-AP {measured.micro_ap:.4f}; {measured.bytes_per_image} bytes stored per image"
            )
    print(f"default top_k: {stats.default_top_k}")
    print(f"index for new collections: {_format_index(stats.index)}")
    if not stats.collections:
        print("collections: none")
    else:
        print("collections:")
        for c in stats.collections:
            print(f"  {c.name}: {c.image_count} images, model {c.model or '?'}")
            print(f"    index: {_format_index(c.index)}")
    return EXIT_OK


# -- delete ----------------------------------------------------------------------------------


def run_delete(client: DedupClient, ids: list[str], collection: str, *, as_json: bool) -> int:
    result = client.delete(ids, collection=collection)
    if as_json:
        _print_json(asdict(result))
        return EXIT_OK
    print(f"deleted: {result.deleted_count}")
    if result.not_found:
        print(f"not found: {', '.join(result.not_found)}")
    return EXIT_OK


# -- groups ----------------------------------------------------------------------------------


def run_groups(client: DedupClient, collection: str, threshold: float, *, as_json: bool) -> int:
    """Every duplicate group of a collection, largest first, with a progress bar while the server scans."""
    groups: list[DuplicateGroup] = []
    with tqdm(desc="scanning", unit="img", disable=as_json, file=sys.stderr) as bar:
        for item in client.groups(collection=collection, threshold=threshold):
            if isinstance(item, ScanProgress):
                bar.total = item.total
                bar.update(item.scanned - bar.n)
            else:
                groups.append(item)
    if as_json:
        _print_json([asdict(g) for g in groups])
        return EXIT_OK
    if not groups:
        print("no duplicates")
    for number, group in enumerate(groups, 1):
        print(f"group {number}: {len(group.ids)} images")
        for pair in group.pairs:
            print(f"  {pair.id_a}  ~  {pair.id_b}  {pair.similarity:.4f}")
    duplicates = sum(len(g.ids) - 1 for g in groups)
    print(f"{len(groups)} groups; {duplicates} images could go (keeping one per group)")
    return EXIT_OK
