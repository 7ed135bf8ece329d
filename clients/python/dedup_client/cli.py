"""``dedup`` / ``python -m dedup_client``: index a folder, check images, list duplicate groups (text, JSON, CSV,
an HTML gallery), clean a folder up safely (``dedupe``, ``undo``), stats, delete.

Exit codes: 0 success; 1 a run finished but some images were INVALID/FAILED (index, check of
several files) or some files could not be restored (undo); 2 usage errors, unreachable server,
or an error status from the server.
The parser is built inside ``main`` so importing this module reads no argv or env.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .client import DEFAULT_TARGET, DEFAULT_TIMEOUT_S, DedupClient
from .commands import (
    EXIT_ERROR,
    CheckOptions,
    DedupeOptions,
    GroupsOptions,
    IndexOptions,
    UsageError,
    run_check,
    run_dedupe,
    run_delete,
    run_groups,
    run_index,
    run_stats,
    run_undo,
)
from .errors import DedupError
from .files import DEFAULT_EXTENSIONS, IdMode, normalise_extensions
from .results import FlipPolicy, KeepPolicy

KEEP_CHOICES = {p.flag: p for p in KeepPolicy if p is not KeepPolicy.DEFAULT}

Command = Callable[[DedupClient, argparse.Namespace], int]


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _threshold(text: str) -> float:
    value = float(text)
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"cosine similarity must be in [-1, 1], got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _add_global_flags(parser: argparse.ArgumentParser, defaults: dict[str, Any] | None) -> None:
    """Global flags, accepted before or after the subcommand.

    The subcommand parsers get the same flags with SUPPRESS defaults, so a flag given
    after the subcommand overrides and an absent one leaves the top-level value alone.
    """

    def default(name: str) -> Any:
        return argparse.SUPPRESS if defaults is None else defaults[name]

    parser.add_argument(
        "--target",
        default=default("target"),
        help="server address host:port (env DEDUP_TARGET; default %s)" % DEFAULT_TARGET,
    )
    parser.add_argument(
        "--collection", default=default("collection"), help='collection (default: "default")'
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=default("timeout"),
        help="deadline in seconds for check/stats/delete (default %g); "
        "an index stream has no overall deadline" % DEFAULT_TIMEOUT_S,
    )
    parser.add_argument(
        "--token", default=default("token"), help="bearer token (env DEDUP_TOKEN)"
    )
    parser.add_argument(
        "--tls", action="store_true", default=default("tls"), help="use TLS with system roots"
    )
    parser.add_argument(
        "--ca-cert",
        type=Path,
        default=default("ca_cert"),
        help="PEM root certificates; implies --tls",
    )
    parser.add_argument(
        "--client-cert",
        type=Path,
        default=default("client_cert"),
        help="PEM certificate of this client, for servers that require mutual TLS (with --client-key); implies --tls",
    )
    parser.add_argument(
        "--client-key", type=Path, default=default("client_key"), help="PEM private key of --client-cert"
    )
    parser.add_argument(
        "--json", action="store_true", default=default("json"), help="machine-readable output"
    )


def _cmd_index(client: DedupClient, args: argparse.Namespace) -> int:
    extensions = DEFAULT_EXTENSIONS | normalise_extensions(args.extensions)
    opts = IndexOptions(
        root=args.dir,
        recursive=args.recursive,
        skip_duplicates=args.skip_duplicates,
        threshold=args.threshold,
        id_mode=IdMode(args.id_mode),
        extensions=extensions,
        collection=args.collection,
    )
    return run_index(client, opts, as_json=args.json)


def _cmd_check(client: DedupClient, args: argparse.Namespace) -> int:
    several = len(args.files) > 1 or args.files[0].is_dir()
    opts = CheckOptions(
        file=args.files[0],
        files=tuple(args.files) if several else (),
        recursive=args.recursive,
        threshold=args.threshold,
        top_k=args.top_k,
        insert=args.insert,
        id=args.id,
        collection=args.collection,
        flip_policy=FlipPolicy[args.flip_policy.upper()],
    )
    return run_check(client, opts, as_json=args.json)


def _cmd_stats(client: DedupClient, args: argparse.Namespace) -> int:
    return run_stats(client, args.collection, as_json=args.json)


def _cmd_groups(client: DedupClient, args: argparse.Namespace) -> int:
    opts = GroupsOptions(
        collection=args.collection,
        threshold=args.threshold,
        keep=KEEP_CHOICES[args.keep],
        flip_policy=FlipPolicy[args.flip_policy.upper()],
        min_size=args.min_size,
        limit=args.limit,
        csv=args.csv,
        html=args.html,
        root=args.root,
        thumbnails=args.thumbnails,
    )
    return run_groups(client, opts, as_json=args.json)


def _cmd_dedupe(client: DedupClient, args: argparse.Namespace) -> int:
    opts = DedupeOptions(
        root=args.dir,
        collection=args.collection,
        threshold=args.threshold,
        keep=KEEP_CHOICES[args.keep],
        move_to=args.move_to,
        manifest=args.manifest,
        reindex=args.reindex,
        extensions=DEFAULT_EXTENSIONS | normalise_extensions(args.extensions),
        html=args.html,
    )
    return run_dedupe(client, opts, as_json=args.json)


def _cmd_undo(client: DedupClient, args: argparse.Namespace) -> int:
    return run_undo(args.manifest, as_json=args.json)


def _cmd_delete(client: DedupClient, args: argparse.Namespace) -> int:
    return run_delete(client, args.ids, args.collection, as_json=args.json)


def _add_keep_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep",
        choices=list(KEEP_CHOICES),
        default=KeepPolicy.LARGEST.flag,
        help="which image of a group to keep: largest (most pixels, then bytes; the default), original-format "
        "(PNG/TIFF/BMP/PPM over JPEG/WebP/GIF, then pixels), oldest or newest (first or last indexed)",
    )


def _build_parser(defaults: dict[str, Any]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dedup", description="Client for the image-deduplication gRPC service."
    )
    _add_global_flags(parser, defaults)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    index = sub.add_parser("index", help="index every image under a folder")
    _add_global_flags(index, None)
    index.add_argument("dir", type=Path, metavar="DIR")
    index.add_argument(
        "--recursive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="descend into sub-folders (default: yes)",
    )
    index.add_argument(
        "--skip-duplicates", action="store_true", help="do not index images that are duplicates"
    )
    index.add_argument(
        "--threshold", type=_threshold, default=0.0, help="0 = the server's default"
    )
    index.add_argument(
        "--id-mode",
        choices=[m.value for m in IdMode],
        default=IdMode.RELATIVE.value,
        help="image id: path relative to DIR (default) or the file name",
    )
    index.add_argument(
        "--extensions",
        nargs="+",
        action="extend",
        default=[],
        metavar="EXT",
        help="more file extensions to include (besides %s)" % " ".join(sorted(DEFAULT_EXTENSIONS)),
    )
    index.set_defaults(handler=_cmd_index)

    check = sub.add_parser(
        "check", help="is this image a duplicate of an indexed one? (several files or folders: one line each)"
    )
    _add_global_flags(check, None)
    check.add_argument("files", type=Path, nargs="+", metavar="FILE", help="image files or folders of images")
    check.add_argument(
        "--recursive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="descend into sub-folders of a folder (default: yes)",
    )
    check.add_argument(
        "--threshold", type=_threshold, default=0.0, help="0 = the server's default"
    )
    check.add_argument(
        "--top-k", type=_non_negative_int, default=0, help="0 = the server's default"
    )
    check.add_argument("--insert", action="store_true", help="index it when it is unique")
    check.add_argument("--id", default="", help="id to store it under (with --insert)")
    check.add_argument(
        "--flip-policy",
        choices=[p.name.lower() for p in FlipPolicy],
        default=FlipPolicy.DEFAULT.name.lower(),
        help="does a mirrored copy count as a duplicate? default: yes (mirror_is_distinct: no)",
    )
    check.set_defaults(handler=_cmd_check)

    stats = sub.add_parser("stats", help="model, defaults, index and per-collection counts")
    _add_global_flags(stats, None)
    stats.set_defaults(handler=_cmd_stats)

    groups = sub.add_parser("groups", help="every group of duplicates already in the collection, with its keeper")
    _add_global_flags(groups, None)
    groups.add_argument("--threshold", type=_threshold, default=0.0, help="0 = the server's default")
    _add_keep_flag(groups)
    groups.add_argument(
        "--flip-policy",
        choices=[p.name.lower() for p in FlipPolicy],
        default=FlipPolicy.DEFAULT.name.lower(),
        help="does a mirrored copy count as a duplicate? default: yes (mirror_is_distinct: no)",
    )
    groups.add_argument("--min-size", type=_non_negative_int, default=0, metavar="N",
                        help="only groups of at least N images")
    groups.add_argument("--limit", type=_non_negative_int, default=0, metavar="N",
                        help="only the N largest groups (0: all)")
    groups.add_argument("--csv", action="store_true", help="one CSV row per member")
    groups.add_argument("--html", type=Path, metavar="FILE",
                        help="also write a self-contained HTML gallery of the groups (thumbnails inline)")
    groups.add_argument("--root", type=Path, metavar="DIR",
                        help="the indexed folder, for thumbnails, when it moved since `dedup index`")
    groups.add_argument("--thumbnails", action=argparse.BooleanOptionalAction, default=True,
                        help="thumbnails in the gallery from the local files (default: yes)")
    groups.set_defaults(handler=_cmd_groups)

    dedupe = sub.add_parser(
        "dedupe", help="clean a folder up: index it, find its groups, and move every copy but the keeper aside"
    )
    _add_global_flags(dedupe, None)
    dedupe.add_argument("dir", type=Path, metavar="DIR")
    dedupe.add_argument("--move-to", type=Path, metavar="QUARANTINE",
                        help="move the copies there, keeping their relative paths (default: only print the plan)")
    dedupe.add_argument("--manifest", type=Path, metavar="FILE",
                        help="where to write the manifest `dedup undo` reads (default: in the quarantine)")
    _add_keep_flag(dedupe)
    dedupe.add_argument("--threshold", type=_threshold, default=0.0, help="0 = the server's default")
    dedupe.add_argument("--reindex", action="store_true",
                        help="index the folder again even when its collection exists")
    dedupe.add_argument("--extensions", nargs="+", action="extend", default=[], metavar="EXT",
                        help="more file extensions to include")
    dedupe.add_argument("--html", type=Path, metavar="FILE", help="also write the gallery of the groups")
    dedupe.set_defaults(handler=_cmd_dedupe)

    undo = sub.add_parser("undo", help="move the files a `dedup dedupe --move-to` moved back to their places")
    _add_global_flags(undo, None)
    undo.add_argument("manifest", type=Path, metavar="MANIFEST")
    undo.set_defaults(handler=_cmd_undo)

    delete = sub.add_parser("delete", help="remove images by id")
    _add_global_flags(delete, None)
    delete.add_argument("ids", nargs="+", metavar="ID")
    delete.set_defaults(handler=_cmd_delete)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    defaults: dict[str, Any] = {
        "target": os.environ.get("DEDUP_TARGET") or DEFAULT_TARGET,
        "collection": "",
        "timeout": DEFAULT_TIMEOUT_S,
        "token": os.environ.get("DEDUP_TOKEN") or None,
        "tls": False,
        "ca_cert": None,
        "client_cert": None,
        "client_key": None,
        "json": False,
    }
    parser = _build_parser(defaults)
    args = parser.parse_args(argv)
    if args.command == "check" and args.insert and not args.id:
        parser.error("check --insert needs --id")
    if args.command == "check" and args.insert and (len(args.files) > 1 or args.files[0].is_dir()):
        parser.error("check --insert takes one file")
    if args.command == "groups" and args.csv and args.json:
        parser.error("groups: --csv or --json, not both")
    if (args.client_cert is None) != (args.client_key is None):
        parser.error("--client-cert and --client-key go together")

    pem: dict[str, bytes | None] = {}
    for name in ("ca_cert", "client_cert", "client_key"):
        path = getattr(args, name)
        try:
            pem[name] = path.read_bytes() if path is not None else None
        except OSError as exc:
            print(f"error: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_ERROR

    handler: Command = args.handler
    try:
        with DedupClient(
            args.target,
            timeout=args.timeout,
            token=args.token,
            tls=args.tls,
            root_certificates=pem["ca_cert"],
            client_cert=pem["client_cert"],
            client_key=pem["client_key"],
        ) as client:
            return handler(client, args)
    except (DedupError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
