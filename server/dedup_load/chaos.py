"""`python -m dedup_load.chaos` (make chaos): a steady load while Triton and Milvus are killed, hung and restarted on
a schedule; then every acknowledged item is looked up in Milvus itself.

Reports lost acknowledged items (must be 0: the exit code is 1 otherwise, or when an id is stored twice), errors
by code, and for each fault when health went NOT_SERVING, when the backend was back and when the front was
SERVING again. The front runs with its default settings, so this checks what a deployment would do. Bounded:
about 2 minutes with the default schedule.

--fronts N runs N fronts on the one Milvus (with an etcd: their writes take turns), spreads the clients over them,
reports each front's numbers, and adds a fault: the last front is SIGKILLed mid-load and started again (what it
acknowledged before must be stored; while it is away its clients' calls fail). --workers W makes each front W
processes. The audit is over everything every front acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from dedup_stack.killable import BACKENDS, KillableStack, front_name
from dedup_stack.process import describe_exit

from .audit import MilvusAudit
from .health import SERVING, HealthLog
from .report import LoadReport
from .runner import LoadConfig, LoadRun
from .workload import DEFAULT_EVAL_DIR, Workload

logger = logging.getLogger("dedup_load.chaos")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Fault:
    at_s: float  # seconds into the load
    backend: str  # "triton", "milvus", or a front: "front2", "front3", ...
    action: str  # "kill" (SIGKILL, then a new process) or "hang" (SIGSTOP, then SIGCONT)
    down_s: float  # how long it stays dead or hung before the restart or SIGCONT

    def describe(self) -> str:
        return f"{self.action} {self.backend} at {self.at_s:.0f} s for {self.down_s:.0f} s"


# Milvus is hung only briefly: its components exit by themselves once their etcd leases (10 s here) run out.
SCHEDULE: tuple[Fault, ...] = (
    Fault(at_s=15, backend="triton", action="kill", down_s=5),
    Fault(at_s=40, backend="milvus", action="kill", down_s=5),
    Fault(at_s=75, backend="triton", action="hang", down_s=6),
    Fault(at_s=90, backend="milvus", action="hang", down_s=3),
)
DURATION_S = 110.0
_DIED_ON_RESUME_S = 3.0


def front_fault(fronts: int) -> Fault:
    """With several fronts: the last one killed between the Milvus kill and the Triton hang, and started again."""
    return Fault(at_s=58, backend=front_name(fronts - 1), action="kill", down_s=3)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recovery:
    fault: str
    not_serving_after_s: float | None  # from the fault to health NOT_SERVING (None: it never flipped)
    backend_back_after_s: float  # from the fault to the backend ready again (restart included)
    serving_after_s: float | None  # from the fault to the front SERVING again
    errors: dict[str, int]  # calls that failed from the fault until 5 s after SERVING again


async def _inject(stack: KillableStack, schedule: Sequence[Fault], started: float) -> list[tuple[Fault, float, float]]:
    """Run the schedule; returns (fault, when it began, when the backend was back) for each."""
    done = []
    for fault in schedule:
        await asyncio.sleep(max(0.0, started + fault.at_s - time.monotonic()))
        began = time.monotonic()
        logger.info("fault: %s", fault.describe())
        if fault.action == "kill":
            await asyncio.to_thread(stack.kill, fault.backend)
            await asyncio.sleep(fault.down_s)
            if fault.backend.startswith("front"):
                number = next(n for n in range(len(stack.fronts)) if front_name(n) == fault.backend)
                await asyncio.to_thread(stack.start_front, number)
            else:
                await asyncio.to_thread(stack.start_triton if fault.backend == "triton" else stack.start_milvus)
        else:
            stack.pause(fault.backend)
            await asyncio.sleep(fault.down_s)
            stack.resume(fault.backend)
            # Triton's python backend has been seen to abort on resume (boost::interprocess::lock_exception in
            # its stub IPC): then it is started again, as a supervisor would, and the log says so.
            await asyncio.sleep(_DIED_ON_RESUME_S)
            if fault.backend in BACKENDS and stack.child(fault.backend).poll() is not None:
                logger.warning("%s died after SIGCONT (%s); starting it again", fault.backend,
                               describe_exit(stack.child(fault.backend).poll() or 0))
                await asyncio.to_thread(stack.start_triton if fault.backend == "triton" else stack.start_milvus)
        done.append((fault, began, time.monotonic()))
        logger.info("%s back after %.1f s", fault.backend, time.monotonic() - began)
    return done


def _recoveries(
    faults: list[tuple[Fault, float, float]], healths: dict[str, HealthLog], load: LoadRun
) -> list[Recovery]:
    """Health as the faulted front saw it (for a backend: the first front's view)."""
    result = []
    for fault, began, back in faults:
        health = healths.get(fault.backend, healths["front"])
        # A killed front does not answer at all: its "NOT_SERVING" is UNREACHABLE.
        not_serving = health.seen("UNREACHABLE" if fault.backend in healths else "NOT_SERVING", since=began)
        serving = health.seen(SERVING, since=not_serving.at if not_serving else back)
        until = (serving.at if serving else back) + 5.0
        errors = Counter(e.code for e in load.events if began <= e.at <= until and e.code != "OK")
        result.append(
            Recovery(
                fault=fault.describe(),
                not_serving_after_s=round(not_serving.at - began, 1) if not_serving else None,
                backend_back_after_s=round(back - began, 1),
                serving_after_s=round(serving.at - began, 1) if serving else None,
                errors=dict(sorted(errors.items())),
            )
        )
    return result


async def _run(
    stack: KillableStack, load: LoadRun, schedule: Sequence[Fault]
) -> tuple[list[tuple[Fault, float, float]], LoadReport]:
    inject = asyncio.create_task(_inject(stack, schedule, time.monotonic()))
    try:
        report = await load.run(mode="chaos", progress=False)
    except BaseException:
        inject.cancel()
        raise
    print(report.table())
    return await inject, report


def chaos(
    work_dir: Path, *, eval_dir: Path, clients: int, duration_s: float, schedule: Sequence[Fault], fronts: int = 1,
    workers: int = 1,
) -> dict[str, object]:
    workload = Workload(eval_dir)
    with contextlib.ExitStack() as running:
        stack = running.enter_context(KillableStack(work_dir, fronts=fronts, workers=workers))
        healths = {front_name(n): running.enter_context(HealthLog(target)) for n, target in enumerate(stack.targets)}
        for health in healths.values():
            health.wait_for(SERVING)
        config = LoadConfig(target=stack.target, targets=tuple(stack.targets), clients=clients,
                            duration_s=duration_s, collection="chaos")
        load = LoadRun(config, workload, front_pids=tuple(stack.child(name).pid or 0 for name in healths))
        faults, report = asyncio.run(_run(stack, load, schedule))
        for health in healths.values():
            health.wait_until(SERVING, timeout_s=60)
        audit = MilvusAudit(stack.milvus_uri)
        try:
            stored = audit.ids(config.collection)
        finally:
            audit.close()
    stored_once = set(stored)
    lost = sorted(load.acked - stored_once)
    calls = Counter(e.code for e in load.events)
    return {
        "acknowledged": len(load.acked),
        "lost_acknowledged": len(lost),
        "lost_sample": lost[:10],
        "stored_rows": len(stored),
        "stored_twice": len(stored) - len(stored_once),
        "calls": dict(sorted(calls.items())),
        "items": dict(sorted(load.stats["IndexStream"].items.items())),
        "recoveries": [dataclasses.asdict(r) for r in _recoveries(faults, healths, load)],
        "front_rss_mb_max": max(load.rss_mb) if load.rss_mb else None,
        "fronts": fronts,
        "workers_per_front": workers,
        "per_front": {
            target: {"calls": dict(sorted(Counter(e.code for e in load.events if e.target == target).items())),
                     "acknowledged_items": load.per_front[target]["IndexStream"].items["INDEXED"]}
            for target in load.per_front
        },
    }


def _table(result: dict[str, object]) -> str:
    lines = [
        f"{result['fronts']} front(s) of {result['workers_per_front']} worker(s): "
        f"acknowledged {result['acknowledged']}, lost {result['lost_acknowledged']} (must be 0), "
        f"rows {result['stored_rows']}, stored twice {result['stored_twice']} (must be 0)",
        f"calls by code: {result['calls']}; stream items: {result['items']}",
        *(f"  front {target}: calls {numbers['calls']}, items acknowledged {numbers['acknowledged_items']}"
          for target, numbers in result["per_front"].items()),  # type: ignore[attr-defined]
        f"{'fault':<34}{'NOT_SERVING':>12}{'backend back':>14}{'SERVING':>10}  errors until SERVING + 5 s",
    ]
    for r in result["recoveries"]:  # type: ignore[attr-defined]
        def seconds(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f} s"

        lines.append(
            f"{r['fault']:<34}{seconds(r['not_serving_after_s']):>12}{seconds(r['backend_back_after_s']):>14}"
            f"{seconds(r['serving_after_s']):>10}  {r['errors'] or '-'}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dedup_load.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent load clients (default 8)")
    parser.add_argument(
        "--duration", type=float, default=DURATION_S, help=f"seconds of load (default {DURATION_S:.0f})"
    )
    parser.add_argument(
        "--eval-dir", type=Path, default=Path(os.environ.get("DEDUP_EVAL_DIR", DEFAULT_EVAL_DIR)),
        help="photos to send (default: ../shared/eval/imagededup, or DEDUP_EVAL_DIR)",
    )
    parser.add_argument("--work-dir", type=Path, help="data and logs of the stack (default: a temp dir)")
    parser.add_argument("--fronts", type=int, default=1, help="fronts on the one Milvus (default 1); >1 adds etcd "
                        "and kills the last front mid-load")
    parser.add_argument("--workers", type=int, default=1, help="DEDUP_WORKERS of each front (default 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    faults = sorted((*SCHEDULE, *((front_fault(args.fronts),) if args.fronts > 1 else ())), key=lambda f: f.at_s)
    schedule = tuple(fault for fault in faults if fault.at_s + fault.down_s < args.duration)
    with contextlib.ExitStack() as stack:
        work_dir = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dedup-chaos-")))
        result = chaos(work_dir, eval_dir=args.eval_dir, clients=args.clients, duration_s=args.duration,
                       schedule=schedule, fronts=args.fronts, workers=args.workers)
    print(_table(result))
    print(json.dumps(result, sort_keys=True))
    return 0 if result["lost_acknowledged"] == 0 and result["stored_twice"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
