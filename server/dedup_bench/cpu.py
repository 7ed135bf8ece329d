"""CPU time of the stack's processes (front, Triton server, Triton's python stub, Milvus), read from /proc.

On a 2-core machine every component shares the cores the model needs, so "where does the CPU go per image" is
what explains ingest throughput against the model alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def _component(pid: str, marker: bytes) -> str | None:
    cmdline = _read(f"/proc/{pid}/cmdline")
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd").encode()
    except OSError:
        cwd = b""
    if marker not in cwd and marker not in cmdline and marker not in _read(f"/proc/{pid}/environ"):
        return None
    if b"triton_python_backend_stub" in cmdline:
        return "triton_stub"
    if b"tritonserver" in cmdline:
        return "triton_server"
    if b"milvus" in cmdline:
        return "milvus"
    if b"dedup_server" in cmdline:
        return "front"
    return None


def cpu_seconds(run_dir: Path) -> dict[str, float]:
    """User+system CPU seconds so far of each stack component started under ``run_dir``, and of this process."""
    marker = str(run_dir.absolute()).encode()
    totals: dict[str, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        component = _component(pid, marker)
        if component is None:
            continue
        fields = _read(f"/proc/{pid}/stat").rsplit(b")", 1)[-1].split()
        if len(fields) > 12:
            totals[component] = totals.get(component, 0.0) + (int(fields[11]) + int(fields[12])) / _TICKS
    times = os.times()
    totals["bench_client"] = times.user + times.system
    return totals


def per_image_ms(before: Mapping[str, float], after: Mapping[str, float], images: int) -> dict[str, float]:
    """CPU milliseconds per image of each component between two readings."""
    return {
        name: round(1000 * (after[name] - before.get(name, 0.0)) / images, 2) for name in sorted(after)
    }
