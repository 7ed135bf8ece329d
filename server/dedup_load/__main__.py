"""`python -m dedup_load` (make load): concurrent clients mixing CheckDuplicate and IndexStream for a while, then a
report of throughput, latency percentiles per RPC and errors by code (a table, then one JSON line last).

Without --target it starts its own stack (Milvus, Triton, the front) on free ports and stops it afterwards;
--fronts N starts N fronts on it (and an etcd, through which they take turns writing), --workers W makes each a
supervisor of W workers; the clients are spread over the fronts and the report has each front's numbers.
--overload starts that front with small limits and sends more clients than they allow: the front must answer
RESOURCE_EXHAUSTED rather than queue without bound (its RSS is sampled to show it stays flat).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from dedup_stack.killable import KillableStack, front_name

from .report import LoadReport
from .runner import LoadConfig, LoadRun
from .workload import DEFAULT_EVAL_DIR, Workload

logger = logging.getLogger("dedup_load")

# The front's limits in --overload mode: few concurrent RPCs and short batch queues, so that a few dozen clients
# exceed them. (The defaults, 512 RPCs and 1024 queued images, are sized for a real machine.)
OVERLOAD_LIMITS: Mapping[str, str] = {
    "DEDUP_MAX_CONCURRENT_RPCS": "16",
    "DEDUP_BATCH_SIZE": "8",
    "DEDUP_BATCH_QUEUE": "8",
    "DEDUP_STREAM_WINDOW": "8",
}
OVERLOAD_CLIENTS = 64


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dedup_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", help="running fronts, host:port[,host:port...] (default: a stack of our own)")
    parser.add_argument("--fronts", type=int, default=1, help="fronts of our own stack, on one Milvus (default 1)")
    parser.add_argument("--workers", type=int, default=1, help="DEDUP_WORKERS of each of those fronts (default 1)")
    parser.add_argument("--clients", type=int, help=f"concurrent clients (default 32; {OVERLOAD_CLIENTS} overloaded)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument("--check-share", type=float, default=0.7, help="share of CheckDuplicate calls (default 0.7)")
    parser.add_argument("--stream-items", type=int, default=8, help="images per IndexStream (default 8)")
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline of each call, seconds (default 30)")
    parser.add_argument("--collection", default="load", help='collection to load (default "load")')
    parser.add_argument("--overload", action="store_true", help="more clients than the front's limits allow")
    parser.add_argument(
        "--eval-dir", type=Path, default=Path(os.environ.get("DEDUP_EVAL_DIR", DEFAULT_EVAL_DIR)),
        help="photos to send (default: ../shared/eval/imagededup, or DEDUP_EVAL_DIR)",
    )
    parser.add_argument("--work-dir", type=Path, help="where our own stack keeps data and logs (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


@contextlib.contextmanager
def _service(args: argparse.Namespace) -> Iterator[tuple[tuple[str, ...], tuple[int, ...]]]:
    """(targets, front pids): the given targets, or a stack of our own for the duration of the run."""
    if args.target:
        yield tuple(t.strip() for t in args.target.split(",") if t.strip()), ()
        return
    with contextlib.ExitStack() as stack:
        work_dir = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dedup-load-")))
        overrides = dict(OVERLOAD_LIMITS) if args.overload else {}
        logger.info("starting Milvus, Triton, %d front(s) of %d worker(s) (etcd when more than one) under %s%s",
                    args.fronts, args.workers, work_dir, " (overload limits)" * args.overload)
        running = stack.enter_context(
            KillableStack(work_dir, front_overrides=overrides, fronts=args.fronts, workers=args.workers)
        )
        pids = tuple(running.child(front_name(n)).pid or 0 for n in range(args.fronts))
        yield tuple(running.targets), pids


def run(args: argparse.Namespace) -> LoadReport:
    workload = Workload(args.eval_dir)
    logger.info("workload: %d images (%d photos and copies), mean %.0f KB",
                len(workload.images), workload.photos, workload.mean_bytes / 1024)
    clients = args.clients or (OVERLOAD_CLIENTS if args.overload else 32)
    with _service(args) as (targets, front_pids):
        config = LoadConfig(
            target=targets[0], targets=targets, clients=clients, duration_s=args.duration,
            check_share=args.check_share, stream_items=args.stream_items, collection=args.collection,
            timeout_s=args.timeout,
        )
        load = LoadRun(config, workload, front_pids=front_pids)
        return asyncio.run(load.run(mode="overload" if args.overload else "normal", progress=not args.no_progress))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    report = run(args)
    print(report.table())
    if args.json:
        args.json.write_text(report.json_line() + "\n")
    print(report.json_line())
    return 0 if any(rpc["ok"] for rpc in report.rpcs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
