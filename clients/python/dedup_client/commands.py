"""The CLI's commands: each takes a client and typed options, prints, returns an exit code.

Nothing here parses arguments (cli.py does) or maps gRPC errors (client.py does).
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import cleanup, gallery, group_report
from .client import DedupClient
from .errors import DedupConnectionError, DedupError
from .files import (
    DEFAULT_EXTENSIONS,
    FILE_KEY,
    PATH_KEY,
    IdMode,
    ImageFile,
    colliding_ids,
    find_images,
    image_id,
    iter_index_items,
)
from .results import (
    CheckResult,
    DuplicateGroup,
    FlipPolicy,
    GroupMember,
    IndexInfo,
    IndexResult,
    IndexStatus,
    KeepPolicy,
    ScanProgress,
    StatsResult,
)
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
    # Several files, or folders: one line per file. Empty: ``file`` alone, answered in detail.
    files: tuple[Path, ...] = ()
    recursive: bool = True


@dataclass(frozen=True)
class GroupsOptions:
    collection: str
    threshold: float = 0.0
    keep: KeepPolicy = KeepPolicy.DEFAULT
    flip_policy: FlipPolicy = FlipPolicy.DEFAULT
    min_size: int = 0
    limit: int = 0
    csv: bool = False
    html: Path | None = None  # also write the gallery there
    root: Path | None = None  # where the indexed folder is now (thumbnails); else the paths recorded at index time
    thumbnails: bool = True


@dataclass(frozen=True)
class DedupeOptions:
    root: Path
    collection: str = ""  # "" = a collection of the folder's own (cleanup.folder_collection)
    threshold: float = 0.0
    keep: KeepPolicy = KeepPolicy.DEFAULT
    move_to: Path | None = None  # None: only print the plan
    manifest: Path | None = None
    reindex: bool = False  # index the folder again even when its collection exists
    extensions: frozenset[str] = DEFAULT_EXTENSIONS
    html: Path | None = None


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, IndexStatus):
        return value.name
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# -- index -----------------------------------------------------------------------------------


def run_index(client: DedupClient, opts: IndexOptions, *, as_json: bool) -> int:
    summary = index_folder(client, opts, show_bar=not as_json and sys.stderr.isatty())
    if as_json:
        _print_json(summary.to_json())
    else:
        print(summary.to_text())
    return EXIT_OK if summary.ok else EXIT_ITEMS_FAILED


def index_folder(client: DedupClient, opts: IndexOptions, *, show_bar: bool) -> IndexSummary:
    """Stream every image of the folder to IndexStream (a progress bar on stderr); the tally of what happened."""
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
    return summary


# -- check -----------------------------------------------------------------------------------


def run_check(client: DedupClient, opts: CheckOptions, *, as_json: bool) -> int:
    if opts.files:
        return run_check_many(client, opts, as_json=as_json)
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
            verified += "  (through its framed photo)" if match.framed else ""
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


def collect_groups(client: DedupClient, opts: GroupsOptions, *, show_bar: bool) -> list[DuplicateGroup]:
    """Every duplicate group of a collection, largest first, with a progress bar while the server scans."""
    groups: list[DuplicateGroup] = []
    with tqdm(desc="scanning", unit="img", disable=not show_bar, file=sys.stderr) as bar:
        for item in client.groups(collection=opts.collection, threshold=opts.threshold, keep=opts.keep,
                                  flip_policy=opts.flip_policy, min_group_size=opts.min_size, limit=opts.limit):
            if isinstance(item, ScanProgress):
                bar.total = item.total
                bar.update(item.scanned - bar.n)
            else:
                groups.append(item)
    return groups


def _keep_name(keep: KeepPolicy) -> str:
    return (KeepPolicy.LARGEST if keep is KeepPolicy.DEFAULT else keep).flag


def run_groups(client: DedupClient, opts: GroupsOptions, *, as_json: bool) -> int:
    """Each group once (members, the similarity joining each, the keeper) as text, JSON or CSV; and a gallery."""
    machine = as_json or opts.csv
    groups = collect_groups(client, opts, show_bar=not machine and sys.stderr.isatty())
    if opts.html is not None:
        written = write_group_gallery(opts.html, groups, opts, progress=not machine and sys.stderr.isatty(),
                                      default_threshold=client.stats().default_threshold)
        print(f"gallery: {written.path} ({written.groups} groups, {written.images} images, "
              f"{written.thumbnails} thumbnails)", file=sys.stderr if machine else sys.stdout)
    if as_json:
        _print_json(group_report.to_json(groups))
    elif opts.csv:
        sys.stdout.write(group_report.to_csv(groups))
    elif opts.html is None:
        print(group_report.to_text(groups, _keep_name(opts.keep)))
    else:
        print(group_report.to_text(groups, _keep_name(opts.keep)).splitlines()[-1])
    return EXIT_OK


def write_group_gallery(
    path: Path, groups: Sequence[DuplicateGroup], opts: GroupsOptions, *, progress: bool, default_threshold: float
) -> gallery.GalleryResult:
    root = opts.root

    def locate(member: GroupMember) -> Path | None:
        if not opts.thumbnails:
            return None
        if root is not None:
            return root / (member.metadata.get(PATH_KEY) or member.id)
        recorded = member.metadata.get(FILE_KEY)
        return Path(recorded) if recorded else None

    info = gallery.GalleryInfo(collection=opts.collection or "default", keep=_keep_name(opts.keep),
                               threshold=opts.threshold or default_threshold)
    return gallery.write_gallery(path, groups, info, locate=locate, progress=progress)


# -- check, several files --------------------------------------------------------------------


def _check_targets(opts: CheckOptions) -> tuple[list[tuple[str, Path]], list[str]]:
    """(label, path) of every file to check, in order: files as given, each folder's images sorted."""
    targets: list[tuple[str, Path]] = []
    problems: list[str] = []
    for given in opts.files:
        if given.is_dir():
            listing = find_images(given, recursive=opts.recursive)
            problems += listing.errors
            targets += [((given / f.relative).as_posix(), f.path) for f in listing.files]
        else:
            targets.append((given.as_posix(), given))
    return targets, problems


def _check_one(client: DedupClient, opts: CheckOptions, path: Path) -> CheckResult | DedupError | OSError:
    try:
        image = path.read_bytes()
    except OSError as exc:
        return exc
    try:
        return client.check(image, collection=opts.collection, threshold=opts.threshold, top_k=opts.top_k,
                            flip_policy=opts.flip_policy)
    except DedupConnectionError:
        raise
    except DedupError as exc:
        if exc.code in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"):
            return exc  # this file's problem: the others go on
        raise  # the collection or the server: every file would fail alike


CHECKS_IN_FLIGHT = 4


def _checked(client: DedupClient, opts: CheckOptions, paths: Sequence[Path]
             ) -> Iterator[CheckResult | DedupError | OSError]:
    """Answers in the order of ``paths``, a few checks in flight at once (each file read only when its check
    starts); an error that is not one file's stops the rest at once."""
    pool = ThreadPoolExecutor(max_workers=CHECKS_IN_FLIGHT, thread_name_prefix="check")
    pending: deque[Future[CheckResult | DedupError | OSError]] = deque()
    remaining = iter(paths)
    try:
        for path in itertools.islice(remaining, 2 * CHECKS_IN_FLIGHT):
            pending.append(pool.submit(_check_one, client, opts, path))
        while pending:
            answer = pending.popleft().result()
            for path in itertools.islice(remaining, 1):
                pending.append(pool.submit(_check_one, client, opts, path))
            yield answer
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_check_many(client: DedupClient, opts: CheckOptions, *, as_json: bool) -> int:
    """One line per file (a JSON object per line with --json); exit 1 when some file could not be checked."""
    targets, problems = _check_targets(opts)
    for problem in problems:
        print(f"warning: cannot list {problem}", file=sys.stderr)
    failed = 0
    show_bar = not as_json and sys.stderr.isatty() and len(targets) > 1
    with tqdm(total=len(targets), unit="img", disable=not show_bar, file=sys.stderr) as bar:
        for (label, _), answer in zip(targets, _checked(client, opts, [p for _, p in targets]), strict=True):
            bar.update(1)
            if isinstance(answer, CheckResult):
                line = json.dumps({"file": label, **asdict(answer)}, sort_keys=True) if as_json else _check_line(
                    label, answer)
            else:
                failed += 1
                message = (f"cannot read file: {answer.strerror or answer}" if isinstance(answer, OSError)
                           else str(answer))
                line = json.dumps({"file": label, "error": message}, sort_keys=True) if as_json else (
                    f"{label}: error: {message}")
            if show_bar:
                tqdm.write(line, file=sys.stdout)  # above the bar
            else:
                print(line)
    return EXIT_ITEMS_FAILED if failed or problems else EXIT_OK


def _check_line(label: str, result: CheckResult) -> str:
    if not result.matches:
        return f"{label}: unique"
    best = result.matches[0]
    flags = (", mirrored" if best.mirrored else "") + (", verified" if best.verified else "")
    more = f" (+{len(result.matches) - 1} more)" if len(result.matches) > 1 else ""
    return f"{label}: duplicate of {best.id} ({best.similarity:.4f}{flags}){more}"


# -- dedupe / undo ---------------------------------------------------------------------------


def run_dedupe(client: DedupClient, opts: DedupeOptions, *, as_json: bool) -> int:
    """Index (or reuse) the folder's collection, find its groups, print the plan; with --move-to, carry it out."""
    if not opts.root.is_dir():
        raise UsageError(f"{opts.root} is not a folder")
    if opts.move_to is not None:
        try:
            cleanup.check_quarantine(opts.root, opts.move_to)  # refuse before minutes of indexing, not after
        except cleanup.CleanupError as exc:
            raise UsageError(str(exc)) from exc
    collection = opts.collection or cleanup.folder_collection(opts.root)
    interactive = not as_json and sys.stderr.isatty()
    log = sys.stderr if as_json else sys.stdout
    if opts.reindex or not _collection_exists(client, collection):
        summary = index_folder(
            client,
            IndexOptions(root=opts.root, recursive=True, skip_duplicates=False, threshold=0.0, id_mode=IdMode.RELATIVE,
                         extensions=opts.extensions, collection=collection),
            show_bar=interactive,
        )
        print(f"indexed {opts.root} into collection {collection!r}:", file=log)
        print(summary.to_text(), file=log)
    else:
        print(f"reusing collection {collection!r} (--reindex to index {opts.root} again)", file=log)
    groups_opts = GroupsOptions(collection=collection, threshold=opts.threshold, keep=opts.keep)
    groups = collect_groups(client, groups_opts, show_bar=interactive)
    plan = cleanup.plan_moves(opts.root, groups)
    if opts.html is not None:
        written = write_group_gallery(opts.html, groups, groups_opts, progress=interactive,
                                      default_threshold=client.stats().default_threshold)
        print(f"gallery: {written.path}", file=log)
    moved: cleanup.MoveResult | None = None
    if opts.move_to is not None:
        try:
            moved = cleanup.apply_plan(plan, opts.move_to, manifest=opts.manifest, collection=collection,
                                       keep=_keep_name(opts.keep), progress=interactive)
        except cleanup.CleanupError as exc:
            raise UsageError(str(exc)) from exc
    if as_json:
        _print_json(_plan_json(plan, collection, opts, moved))
    else:
        print(_plan_text(plan, opts, moved))
    return EXIT_OK


def _collection_exists(client: DedupClient, collection: str) -> bool:
    try:
        client.stats(collection=collection)
    except DedupError as exc:
        if exc.code == "NOT_FOUND":
            return False
        raise
    return True


def _plan_text(plan: cleanup.Plan, opts: DedupeOptions, moved: cleanup.MoveResult | None) -> str:
    verb = "moved" if moved is not None else "would move"
    lines: list[str] = []
    group = 0
    for move in plan.moves:
        if move.group != group:
            group = move.group
            lines.append(f"group {group}: keep {move.keeper}")
        flags = "  mirrored" if move.mirrored else ""
        lines.append(f"  {verb} {move.relative}  {move.similarity:.4f}{flags}")
    skipped = list(plan.skipped) + list(moved.skipped if moved else ())
    if skipped:
        lines.append("left in place:")
        lines += [f"  {s.relative}: {s.reason}" for s in skipped]
    count = len(moved.moved) if moved is not None else len(plan.moves)
    size = sum(m.bytes for m in moved.moved) if moved is not None else plan.bytes
    lines.append(f"{count} files {verb} ({group_report.human_bytes(size)}) from {plan.groups} groups, keeping one "
                 f"per group ({_keep_name(opts.keep)})")
    if moved is None:
        lines.append("nothing was moved: add --move-to QUARANTINE to move them (never deleted; `dedup undo` "
                     "puts them back)")
    else:
        lines.append(f"quarantine: {moved.quarantine}")
        lines.append(f"manifest: {moved.manifest}  (undo: dedup undo {moved.manifest})")
    return "\n".join(lines)


def _plan_json(plan: cleanup.Plan, collection: str, opts: DedupeOptions,
               moved: cleanup.MoveResult | None) -> dict[str, Any]:
    return {
        "root": str(plan.root), "collection": collection, "keep": _keep_name(opts.keep),
        "moves": [asdict(m) for m in (moved.moved if moved is not None else plan.moves)],
        "skipped": [asdict(s) for s in list(plan.skipped) + list(moved.skipped if moved else ())],
        "moved": moved is not None,
        "quarantine": str(moved.quarantine) if moved else None,
        "manifest": str(moved.manifest) if moved else None,
    }


def run_undo(manifest: Path, *, as_json: bool) -> int:
    """Move every file a `dedup dedupe --move-to` listed back to its place; exit 1 when some could not be."""
    try:
        result = cleanup.undo(manifest, progress=not as_json and sys.stderr.isatty())
    except cleanup.CleanupError as exc:
        raise UsageError(str(exc)) from exc
    if as_json:
        _print_json(asdict(result))
    else:
        print(f"restored {result.restored} files; {result.already_in_place} were in place already")
        for problem in result.problems:
            print(f"  {problem.relative}: {problem.reason}")
    return EXIT_ITEMS_FAILED if result.problems else EXIT_OK
